"""The JIT warm-up in the plan: SGLang's DeepGEMM precompile command with the server's own flags, vLLM's
VLLM_DEEP_GEMM_WARMUP at the first start, none where nothing compiles at run time (CPU, BF16, AMD)."""

from __future__ import annotations

import copy
import json
from importlib import resources
from pathlib import Path

import pytest
import yaml
from argv_helpers import flag_pairs

from glm_deploy.catalog import CATALOG_FILES, Catalog, load_catalog
from glm_deploy.errors import CatalogError
from glm_deploy.render import PlanOptions, render_plan

PRECOMPILE = ["python3", "-m", "sglang.compile_deep_gemm"]
# The server flags the warm-up replaces (its own loopback server answers no one) or leaves out.
NOT_KERNEL_FLAGS = ("--host", "--port", "--served-model-name", "--config")


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog()


def test_sglang_fp8_on_nvidia_precompiles_with_the_servers_own_flags(catalog: Catalog) -> None:
    plan = render_plan(catalog, model="glm-5.1-fp8", engine="sglang", hardware="b200")
    warmup = plan.warmup
    assert warmup is not None and warmup.kind == "command"
    assert warmup.nodes is not None and len(warmup.nodes) == len(plan.nodes) == 1
    argv = warmup.nodes[0]
    assert argv[:3] == PRECOMPILE
    server_pairs, server_positionals = flag_pairs(plan.nodes[0].argv[3:])
    warmup_pairs, warmup_positionals = flag_pairs(argv[3:])
    kernel_pairs = {flag: value for flag, value in server_pairs.items() if flag not in NOT_KERNEL_FLAGS}
    # Model, revision, parallelism and every kernel-shaping flag exactly as the server has them.
    assert {flag: value for flag, value in warmup_pairs.items() if flag not in NOT_KERNEL_FLAGS} == kernel_pairs
    assert (kernel_pairs["--model-path"], kernel_pairs["--tp"]) == ("zai-org/GLM-5.1-FP8", "8")
    assert warmup_positionals == server_positionals
    # Same order as the server's argv, so a person can diff the two commands.
    assert [w for w in argv[3:] if w.startswith("--") and w not in NOT_KERNEL_FLAGS] == [
        w for w in plan.nodes[0].argv[3:] if w.startswith("--") and w not in NOT_KERNEL_FLAGS
    ]
    # Its own short-lived server: loopback, not the endpoint's port, no name, no API key file.
    assert (warmup_pairs["--host"], warmup_pairs["--port"]) == ("127.0.0.1", "30100")
    assert "--served-model-name" not in warmup_pairs and "--config" not in warmup_pairs
    assert warmup.caches == ["deep_gemm"]
    assert warmup.cache_dirs == [plan.cache_kinds["deep_gemm"]] == [plan.cache_env["SGLANG_DG_CACHE_DIR"]]
    assert warmup.timeout_s is not None and warmup.timeout_s >= 3600
    assert "DeepGEMM" in warmup.why and "compile_deep_gemm" in warmup.source
    whys = {entry.flag: entry.why for entry in plan.explanations}
    assert "before the cut-over" in whys["warmup python3 -m sglang.compile_deep_gemm"]


def test_sglang_warmup_moves_off_the_endpoints_port(catalog: Catalog) -> None:
    plan = render_plan(
        catalog, model="glm-5.1-fp8", engine="sglang", hardware="b200", options=PlanOptions(port=30100)
    )
    assert plan.warmup is not None and plan.warmup.nodes is not None
    assert flag_pairs(plan.warmup.nodes[0])[0]["--port"] == "30101"


def test_multi_node_warmup_keeps_each_nodes_rank(catalog: Catalog) -> None:
    plan = render_plan(
        catalog,
        model="glm-5-fp8",
        engine="sglang",
        hardware="h100",
        nodes=2,
        options=PlanOptions(head_address="10.0.0.1", network_interface="eth1"),
    )
    assert plan.warmup is not None and plan.warmup.nodes is not None and len(plan.warmup.nodes) == 2
    for node, argv in zip(plan.nodes, plan.warmup.nodes, strict=True):
        pairs = flag_pairs(argv)[0]
        assert pairs["--node-rank"] == str(node.rank)
        assert (pairs["--nnodes"], pairs["--dist-init-addr"], pairs["--tp"]) == ("2", "10.0.0.1:5000", "16")


def test_vllm_fp8_on_nvidia_compiles_everything_at_the_first_start(catalog: Catalog) -> None:
    plan = render_plan(catalog, model="glm-5.1-fp8", engine="vllm", hardware="h200")
    warmup = plan.warmup
    assert warmup is not None
    assert (warmup.kind, warmup.nodes, warmup.timeout_s) == ("first_start", None, None)
    assert warmup.env == {"VLLM_DEEP_GEMM_WARMUP": "full"}
    assert warmup.cache_dirs == [plan.cache_env["VLLM_CACHE_ROOT"]]
    assert all(node.env["VLLM_DEEP_GEMM_WARMUP"] == "full" for node in plan.nodes)
    assert plan.container is not None and plan.container.env["VLLM_DEEP_GEMM_WARMUP"] == "full"
    whys = {entry.flag: entry.why for entry in plan.explanations}
    assert "relax" in whys["VLLM_DEEP_GEMM_WARMUP"] and "facts" in whys["VLLM_DEEP_GEMM_WARMUP"]


@pytest.mark.parametrize(
    ("model", "engine", "hardware"),
    [
        ("glm-tiny", "vllm-cpu", "cpu"),  # the CPU engine compiles no DeepGEMM kernels
        ("glm-5.1-fp8", "sglang", "mi300x"),  # FP8, but DeepGEMM is NVIDIA-only
        ("glm-5", "sglang", "b200"),  # BF16 weights: no FP8 GEMMs
        ("glm-5", "vllm", "h200"),
        ("glm-5-nvfp4", "sglang", "b200"),  # FP4 GEMMs do not go through DeepGEMM
    ],
)
def test_no_warmup_where_nothing_compiles_deepgemm(catalog: Catalog, model: str, engine: str, hardware: str) -> None:
    plan = render_plan(catalog, model=model, engine=engine, hardware=hardware)
    assert plan.warmup is None
    assert "VLLM_DEEP_GEMM_WARMUP" not in plan.nodes[0].env
    assert not any(entry.flag.startswith("warmup ") for entry in plan.explanations)


def test_cpu_plan_has_no_warmup_and_its_cache_kinds(catalog: Catalog) -> None:
    plan = render_plan(catalog, model="glm-tiny", engine="vllm-cpu", hardware="cpu")
    assert plan.warmup is None
    assert set(plan.cache_kinds) == set(catalog.engines["vllm-cpu"].caches)
    assert sorted(plan.cache_kinds.values()) == sorted(plan.cache_dirs[1:])
    data = json.loads(json.dumps(plan.to_dict()))
    assert data["warmup"] is None and data["cache_kinds"] == plan.cache_kinds


def test_warmup_in_the_plan_dict(catalog: Catalog) -> None:
    data = render_plan(catalog, model="glm-5.1-fp8", engine="sglang", hardware="h200").to_dict()
    assert set(data["warmup"]) == {"kind", "nodes", "env", "caches", "cache_dirs", "timeout_s", "why", "source"}
    assert data["warmup"]["nodes"][0][:3] == PRECOMPILE


def test_catalog_refuses_a_warmup_that_warms_nothing_known(tmp_path: Path) -> None:
    for name in CATALOG_FILES:
        (tmp_path / name).write_text(resources.files("glm_deploy").joinpath("catalog", name).read_text())
    engines = yaml.safe_load((tmp_path / "engines.yml").read_text())
    broken = copy.deepcopy(engines)
    broken["engines"]["sglang"]["warmup"]["caches"] = ["kernels"]
    (tmp_path / "engines.yml").write_text(yaml.safe_dump(broken))
    with pytest.raises(CatalogError, match=r"engines\.sglang\.warmup\.caches names 'kernels'"):
        load_catalog(tmp_path)
    broken = copy.deepcopy(engines)
    del broken["engines"]["vllm"]["warmup"]["env"]
    (tmp_path / "engines.yml").write_text(yaml.safe_dump(broken))
    with pytest.raises(CatalogError, match="neither a launcher"):
        load_catalog(tmp_path)
