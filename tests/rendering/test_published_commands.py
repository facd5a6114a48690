"""Each published launch command is reproduced by the renderer: every flag and value, order aside.

Source of every command below: shared/reference/glm-serving-facts.md (the seeds-derived facts file);
each test's docstring quotes the lines it is built from.
"""

from __future__ import annotations

import pytest
from argv_helpers import flag_pairs, missing_from

from glm_deploy.catalog import Catalog, load_catalog
from glm_deploy.render import PlanOptions, render_plan

SERVE = "--served-model-name {name} --host 0.0.0.0 --port 8000"


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog()


def test_helper_reports_a_missing_or_different_flag() -> None:
    """The comparison itself must be able to fail."""
    assert missing_from(["vllm", "serve", "m", "--tp", "8"], "vllm serve m --tp 4 --x") == ["--tp 4", "--x"]
    assert flag_pairs(["--a=1", "--b", "--c", "2"]) == ({"--a": "1", "--b": None, "--c": "2"}, [])


def test_glm51_fp8_b200_sglang_eagle(catalog: Catalog) -> None:
    """facts § SGLang launch:
    Common: `--model-path REPO --tp N --tool-call-parser glm47 --reasoning-parser glm45
    --mem-fraction-static 0.85 --served-model-name NAME --host H --port P`.
    Speculative (EAGLE over the MTP head): `--speculative-algorithm EAGLE --speculative-num-steps 3
    --speculative-eagle-topk 1 --speculative-num-draft-tokens 4` (GLM-5.1 adds env `SGLANG_ENABLE_SPEC_V2=1`).
    B200 FP8 extras: `--ep 1 --quantization fp8 --attention-backend nsa --nsa-decode-backend trtllm
    --nsa-prefill-backend trtllm --moe-runner-backend flashinfer_trtllm
    --enable-flashinfer-allreduce-fusion` (mem 0.9).
    """
    published = (
        "python3 -m sglang.launch_server --model-path zai-org/GLM-5.1-FP8 --tp 8 --tool-call-parser glm47 "
        "--reasoning-parser glm45 --speculative-algorithm EAGLE --speculative-num-steps 3 "
        "--speculative-eagle-topk 1 --speculative-num-draft-tokens 4 --ep 1 --quantization fp8 "
        "--attention-backend nsa --nsa-decode-backend trtllm --nsa-prefill-backend trtllm "
        "--moe-runner-backend flashinfer_trtllm --enable-flashinfer-allreduce-fusion "
        "--mem-fraction-static 0.9 " + SERVE.format(name="glm-5.1-fp8")
    )
    plan = render_plan(catalog, model="glm-5.1-fp8", engine="sglang", hardware="b200")
    assert plan.speculative is True
    assert missing_from(plan.nodes[0].argv, published) == []
    assert plan.nodes[0].argv[:3] == ["python3", "-m", "sglang.launch_server"]
    assert plan.nodes[0].env["SGLANG_ENABLE_SPEC_V2"] == "1"


def test_glm51_fp8_b200_vllm_mtp(catalog: Catalog) -> None:
    """facts § vLLM launch:
    Common: `vllm serve REPO --tensor-parallel-size N --tool-call-parser glm47 --reasoning-parser glm45
    --enable-auto-tool-choice --trust-remote-code --served-model-name NAME --host H --port P`.
    MTP: `--speculative-config.method mtp --speculative-config.num_speculative_tokens 3`.
    """
    published = (
        "vllm serve zai-org/GLM-5.1-FP8 --tensor-parallel-size 8 "
        "--tool-call-parser glm47 --reasoning-parser glm45 "
        "--enable-auto-tool-choice --trust-remote-code --speculative-config.method mtp "
        "--speculative-config.num_speculative_tokens 3 " + SERVE.format(name="glm-5.1-fp8")
    )
    plan = render_plan(catalog, model="glm-5.1-fp8", engine="vllm", hardware="b200")
    assert missing_from(plan.nodes[0].argv, published) == []
    assert plan.nodes[0].argv[:3] == ["vllm", "serve", "zai-org/GLM-5.1-FP8"]
    # GLM-5.1-FP8 is reported broken on vLLM 0.20/0.21 (facts): the catalog's choice stays on 0.19.x.
    assert plan.engine_version is not None and plan.engine_version.startswith("0.19.")


def test_glm5_fp8_b200_vllm(catalog: Catalog) -> None:
    """facts § vLLM launch:
    Common: `vllm serve REPO --tensor-parallel-size N --tool-call-parser glm47 --reasoning-parser glm45
    --enable-auto-tool-choice --trust-remote-code --served-model-name NAME --host H --port P`.
    Minimum vLLM: 0.16.0 (GLM-5).
    """
    published = (
        "vllm serve zai-org/GLM-5-FP8 --tensor-parallel-size 8 "
        "--tool-call-parser glm47 --reasoning-parser glm45 "
        "--enable-auto-tool-choice --trust-remote-code --served-model-name glm5 --host 0.0.0.0 --port 8000"
    )
    plan = render_plan(
        catalog, model="glm-5-fp8", engine="vllm", hardware="b200", options=PlanOptions(served_name="glm5")
    )
    assert missing_from(plan.nodes[0].argv, published) == []


def test_glm52_fp8_b200_sglang(catalog: Catalog) -> None:
    """facts § SGLang launch:
    Common: `--model-path REPO --tp N --tool-call-parser glm47 --reasoning-parser glm45 ...`.
    GLM-5.2 low-latency uses steps 5 / topk 1 / draft 6 and mem 0.8.
    `lmsysorg/sglang:latest` for GLM-5.2 (pin a digest!).
    """
    published = (
        "python3 -m sglang.launch_server --model-path zai-org/GLM-5.2-FP8 --tp 8 --tool-call-parser glm47 "
        "--reasoning-parser glm45 --speculative-algorithm EAGLE --speculative-num-steps 5 "
        "--speculative-eagle-topk 1 --speculative-num-draft-tokens 6 --mem-fraction-static 0.8 "
        + SERVE.format(name="glm-5.2-fp8")
    )
    plan = render_plan(catalog, model="glm-5.2-fp8", engine="sglang", hardware="b200")
    assert missing_from(plan.nodes[0].argv, published) == []
    assert plan.image == "lmsysorg/sglang:latest"
    assert any("floating tag" in warning for warning in plan.warnings)


def test_glm52_fp8_b200_vllm(catalog: Catalog) -> None:
    """facts § vLLM launch:
    Common: `vllm serve REPO --tensor-parallel-size N --tool-call-parser glm47 --reasoning-parser glm45
    --enable-auto-tool-choice --trust-remote-code ...`.
    MTP: `--speculative-config.method mtp --speculative-config.num_speculative_tokens 3` (GLM-5.2: 5).
    KV cache: `--kv-cache-dtype fp8` on Hopper, `fp8_e4m3` on Blackwell (GLM-5.2 recipe).
    GLM tags: `glm52` (CUDA 13), `glm52-cu129` (CUDA 12.x hosts, e.g. driver 570) [seed 004, vllm#39878].
    """
    published = (
        "vllm serve zai-org/GLM-5.2-FP8 --tensor-parallel-size 8 "
        "--tool-call-parser glm47 --reasoning-parser glm45 "
        "--enable-auto-tool-choice --trust-remote-code --speculative-config.method mtp "
        "--speculative-config.num_speculative_tokens 5 --kv-cache-dtype fp8_e4m3 "
        + SERVE.format(name="glm-5.2-fp8")
    )
    plan = render_plan(catalog, model="glm-5.2-fp8", engine="vllm", hardware="b200")
    assert missing_from(plan.nodes[0].argv, published) == []
    # A driver-570 host (CUDA 12.8) gets the CUDA 12.9 tag; a CUDA 13 host gets the plain glm52 tag.
    assert plan.image == "vllm/vllm-openai:glm52-cu129"
    cuda13 = render_plan(
        catalog, model="glm-5.2-fp8", engine="vllm", hardware="b200", options=PlanOptions(cuda_version="13.0")
    )
    assert cuda13.image == "vllm/vllm-openai:glm52"
    assert "NVIDIA_DISABLE_REQUIRE" not in cuda13.nodes[0].env
