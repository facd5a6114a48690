"""`glm-deploy plan` and `glm-deploy catalog` as a person runs them: output, exit codes, error messages."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from glm_deploy.cli import build_parser, main
from glm_deploy.commands.plan import options_from_args
from glm_deploy.render import PlanOptions
from glm_deploy.render.options import option_type

GOOD = ["plan", "--model", "glm-5.1-fp8", "--engine", "vllm", "--hardware", "b200"]


def run_cli(capsys: pytest.CaptureFixture[str], args: list[str]) -> tuple[int, str, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# Each bad input: the arguments, and what the message must name (the input, the value, what would work).
BAD_INPUTS = {
    "unknown model": (
        ["--model", "glm-9", "--engine", "vllm", "--hardware", "b200"],
        ["unknown model 'glm-9'", "known models:", "glm-5.1-fp8", "glm-tiny"],
    ),
    "unknown engine": (
        ["--model", "glm-5-fp8", "--engine", "trtllm", "--hardware", "b200"],
        ["unknown engine 'trtllm'", "known engines: sglang, vllm, vllm-cpu"],
    ),
    "unknown hardware": (
        ["--model", "glm-5-fp8", "--engine", "vllm", "--hardware", "a100"],
        ["unknown hardware 'a100'", "known hardware:", "b200", "mi355x"],
    ),
    "GLM-5-FP8 on one H100 node": (
        ["--model", "glm-5-fp8", "--engine", "vllm", "--hardware", "h100", "--nodes", "1"],
        ["'glm-5-fp8' on hardware 'h100' needs 16 GPUs: 2 node(s)", "--nodes 1 gives 8", "use --nodes 2"],
    ),
    "BF16 where only FP8 fits": (
        ["--model", "glm-5", "--engine", "sglang", "--hardware", "b200", "--nodes", "1"],
        [
            "'glm-5' on hardware 'b200' needs 16 GPUs",
            "smaller model 'glm-5-fp8'",
            "fits on 1 node(s) of b200",
        ],
    ),
    "NVFP4 on a non-Blackwell GPU": (
        ["--model", "glm-5-nvfp4", "--engine", "sglang", "--hardware", "h200"],
        ["'glm-5-nvfp4' has NVFP4 weights", "Blackwell", "hardware 'h200'", "use hardware b200"],
    ),
    "FP8 GLM-5 on AMD": (
        ["--model", "glm-5-fp8", "--engine", "sglang", "--hardware", "mi300x"],
        ["'glm-5-fp8' cannot run on hardware 'mi300x'", "use glm-5.1-fp8 or glm-5 (BF16)"],
    ),
    "EAGLE on AMD": (
        ["--model", "glm-5.1-fp8", "--engine", "sglang", "--hardware", "mi325x", "--speculative"],
        [
            "option speculative is not available on hardware mi325x",
            "not supported on AMD",
            "speculative false",
        ],
    ),
    "speculative on the community NVFP4 without MTP": (
        ["--model", "glm-5-nvfp4-community", "--engine", "sglang", "--hardware", "b200", "--speculative"],
        ["glm-5-nvfp4-community", "without the MTP layer", "use glm-5-nvfp4"],
    ),
    "engine version below the model's minimum": (
        ["--model", "glm-5.2-fp8", "--engine", "vllm", "--hardware", "b200", "--engine-version", "0.19.1"],
        ["vllm 0.19.1 is older than glm-5.2-fp8 needs (>= 0.23.0)", "use engine_version 0.23.0 or newer"],
    ),
    "known-bad SGLang version": (
        ["--model", "glm-5-fp8", "--engine", "sglang", "--hardware", "b200", "--engine-version", "0.5.10rc0"],
        ["sglang 0.5.10rc0 is a known-bad version", "FlashMLA", "pick another engine_version"],
    ),
    "known-bad vLLM for GLM-5.1-FP8": (
        ["--model", "glm-5.1-fp8", "--engine", "vllm", "--hardware", "b200", "--engine-version", "0.21.0"],
        ["vllm 0.21.0 is a known-bad version for glm-5.1-fp8", "pin 0.19.x"],
    ),
    "engine version the catalog has no image for": (
        ["--model", "glm-5-fp8", "--engine", "vllm", "--hardware", "b200", "--engine-version", "0.17.0"],
        ["no vllm version 0.17.0 image", "catalog versions: 0.19.0, 0.19.1", "option image="],
    ),
    "dp_attention with vllm": (
        ["--model", "glm-5-fp8", "--engine", "vllm", "--hardware", "b200", "--dp-attention"],
        ["option dp_attention is an SGLang feature", "engine 'vllm'", "use --engine sglang"],
    ),
    "more nodes than the layout": (
        ["--model", "glm-5-fp8", "--engine", "vllm", "--hardware", "b200", "--nodes", "2"],
        ["--nodes 2 does not fit model 'glm-5-fp8'", "exactly 1 node(s)", "use --nodes 1"],
    ),
    "speculative flags in extra args": (
        [
            "--model",
            "glm-5.1-fp8",
            "--engine",
            "sglang",
            "--hardware",
            "b200",
            "--extra-arg=--speculative-num-steps=5",
        ],
        ["extra_args sets --speculative-num-steps", "use the option speculative"],
    ),
    "extra args repeating a rendered flag": (
        ["--model", "glm-5.1-fp8", "--engine", "vllm", "--hardware", "b200", "--extra-arg=--port=9000"],
        ["extra_args sets --port, which the plan already renders as '8000'", "option port"],
    ),
    "API key on the command line": (
        ["--model", "glm-5.1-fp8", "--engine", "vllm", "--hardware", "b200", "--extra-arg=--api-key=abc"],
        ["extra_args must not carry --api-key", "secrets never go on a command line"],
    ),
    "IndexCache where it is not published": (
        ["--model", "glm-5.2-fp8", "--engine", "sglang", "--hardware", "b200", "--index-cache"],
        ["option index_cache is not available for glm-5.2-fp8", "glm-5-fp8 and glm-5.1-fp8 only"],
    ),
    "context longer than the model's": (
        ["--model", "glm-5.1-fp8", "--engine", "vllm", "--hardware", "b200", "--max-model-len", "300000"],
        ["max_model_len 300000 does not fit glm-5.1-fp8", "context length 202752"],
    ),
    "memory fraction out of range": (
        ["--model", "glm-5.1-fp8", "--engine", "sglang", "--hardware", "b200", "--mem-fraction", "1.5"],
        ["mem_fraction 1.5 is out of range", "(0, 1]"],
    ),
    "engine without a profile for the hardware": (
        ["--model", "glm-5.1-fp8", "--engine", "vllm", "--hardware", "mi300x"],
        ["engine 'vllm' has no profile for hardware 'mi300x'", "engines for glm-5.1-fp8 on mi300x: sglang"],
    ),
    "model on an engine it does not run on": (
        ["--model", "glm-tiny", "--engine", "sglang", "--hardware", "cpu"],
        ["model 'glm-tiny' cannot run on engine 'sglang'", "engines for glm-tiny: vllm-cpu"],
    ),
    "native runtime for a container-only engine": (
        ["--model", "glm-5-fp8", "--engine", "sglang", "--hardware", "b200", "--runtime", "native"],
        ["runtime 'native' is not available for engine 'sglang'", "runtimes for sglang: container"],
    ),
    "an image for the native runtime": (
        [
            "--model",
            "glm-tiny",
            "--engine",
            "vllm-cpu",
            "--hardware",
            "cpu",
            "--image",
            "vllm/vllm-openai:v0.19.1",
        ],
        ["option image does not apply to the native runtime of vllm-cpu"],
    ),
    "memory fraction for the CPU engine": (
        ["--model", "glm-tiny", "--engine", "vllm-cpu", "--hardware", "cpu", "--mem-fraction", "0.5"],
        ["option mem_fraction does not apply to engine vllm-cpu", "VLLM_CPU_KVCACHE_SPACE"],
    ),
    "a CUDA version that is not MAJOR.MINOR": (
        ["--model", "glm-5-fp8", "--engine", "vllm", "--hardware", "b200", "--cuda-version", "12"],
        ["cuda_version '12' is not MAJOR.MINOR", "e.g. 12.8 or 13.0"],
    ),
    "a served name unfit for a unit name": (
        ["--model", "glm-5-fp8", "--engine", "vllm", "--hardware", "b200", "--served-name", "my model"],
        ["served_name 'my model' is not usable", "letters, digits"],
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_exits_2_with_an_actionable_message(capsys: pytest.CaptureFixture[str], case: str) -> None:
    args, expected = BAD_INPUTS[case]
    code, out, err = run_cli(capsys, ["plan", *args])
    assert code == 2
    assert out == ""
    assert err.startswith("glm-deploy plan: error: ")
    assert "Traceback" not in err
    for text in expected:
        assert text in err, f"{text!r} missing from: {err}"


def test_plan_prints_the_command_and_why(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, GOOD)
    assert code == 0 and err == ""
    assert "docker run" in out
    assert "--entrypoint vllm vllm/vllm-openai:v0.19.1 serve zai-org/GLM-5.1-FP8" in out
    assert "--speculative-config.method mtp" in out
    assert "Why these flags:" in out
    assert "--kv-cache-dtype" in out.split("Why these flags:")[1]
    assert "VLLM_API_KEY=<your API key>" in out
    assert "Warnings:" in out and "40-hex commit" in out


def test_plan_json_has_image_and_nodes(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, [*GOOD, "--json", "--port", "9001", "--no-speculative"])
    assert code == 0
    data = json.loads(out)
    assert data["image"] == "vllm/vllm-openai:v0.19.1"
    assert len(data["nodes"]) == 1
    argv = data["nodes"][0]["argv"]
    assert argv[argv.index("--port") + 1] == "9001"
    assert not any(arg.startswith("--speculative") for arg in argv)
    assert data["nodes"][0]["env"]["HF_HUB_OFFLINE"] == "1"


def test_every_plan_option_is_a_flag_of_plan() -> None:
    # The flags come from PlanOptions' fields: each, given on the command line, sets its option; none given
    # leaves every option at its default.
    parser = build_parser()
    assert options_from_args(parser.parse_args(GOOD)) == PlanOptions()
    for field in dataclasses.fields(PlanOptions):
        flag = field.metadata.get("flag", "--" + field.name.replace("_", "-"))
        kind = option_type(field.name)
        words: list[str]
        if kind is bool:
            words, expected = [flag], field.default is not True
        elif kind is tuple:
            words, expected = [f"{flag}=--one", f"{flag}=--two"], ("--one", "--two")
        elif kind is int or kind is float:
            words, expected = [flag, "7"], kind(7)
        else:
            choices = field.metadata.get("choices")
            value = choices[-1] if choices else "/some/value"
            words, expected = [flag, value], value
        options = options_from_args(parser.parse_args([*GOOD, *words]))
        assert getattr(options, field.name) == expected, field.name
    # The spellings users know.
    no_speculative = options_from_args(parser.parse_args([*GOOD, "--no-speculative", "--no-api-key"]))
    assert (no_speculative.speculative, no_speculative.api_key_required) == (False, False)


def test_catalog_lists_models_engines_and_hardware(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, ["catalog"])
    assert code == 0
    for name in ("glm-5-fp8", "glm-5-nvfp4-community", "glm-tiny", "sglang", "vllm-cpu", "mi355x", "cpu"):
        assert name in out
    assert "avoid 0.5.10rc0" in out
    code, out, _ = run_cli(capsys, ["catalog", "--json"])
    data = json.loads(out)
    assert {model["name"] for model in data["models"]} >= {"glm-5.2-fp8", "glm-tiny"}
    glm5 = next(model for model in data["models"] if model["name"] == "glm-5-fp8")
    assert glm5["hardware"]["h100"] == {"gpus": 16, "nodes": 2}
    assert "mi300x" not in glm5["hardware"]


def _entry_point() -> Path:
    script = Path(sys.executable).parent / "glm-deploy"
    assert script.is_file(), f"the glm-deploy entry point is not installed beside {sys.executable}"
    return script


@pytest.mark.playbook


def test_installed_entry_point_refuses_bad_input_without_traceback() -> None:
    result = subprocess.run(
        [
            str(_entry_point()),
            "plan",
            "--model",
            "glm-5-fp8",
            "--engine",
            "vllm",
            "--hardware",
            "h100",
            "--nodes",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2
    assert "needs 16 GPUs: 2 node(s)" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


@pytest.mark.playbook


def test_installed_entry_point_prints_a_json_plan() -> None:
    result = subprocess.run(
        [
            str(_entry_point()),
            "plan",
            "--model",
            "glm-tiny",
            "--engine",
            "vllm-cpu",
            "--hardware",
            "cpu",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    data = json.loads(result.stdout)
    assert data["runtime"] == "native"
    assert data["nodes"][0]["argv"][0] == "/var/lib/glm-deploy/venvs/vllm-cpu-0.32.0/bin/vllm"
