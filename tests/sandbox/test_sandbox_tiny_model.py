"""The tiny GLM-MoE model: same bytes every build, loadable by transformers, GLM chat markup intact."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sandbox_helpers import digests, glm_deploy

from glm_deploy.sandbox.environment import SandboxError
from glm_deploy.sandbox.tiny_model import build_tiny_model

pytestmark = pytest.mark.sandbox

EXPECTED_FILES = {
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
}


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Revision 1 built twice (separate processes, different hash seeds), revisions 2 and 3 once, via the CLI.

    Training runs once per recipe (the builder keeps it in its cache); test_training_is_repeatable shows that two
    trainings in two processes give the same weights.
    """
    root = tmp_path_factory.mktemp("tiny-model")
    made: dict[str, Path] = {}
    for label, revision, hash_seed in (("r1-a", 1, "1"), ("r1-b", 1, "987"), ("r2", 2, "1"), ("r3", 3, "1")):
        out = root / label
        completed = glm_deploy(
            "sandbox",
            "build-model",
            "--out",
            str(out),
            "--revision",
            str(revision),
            env={"PYTHONHASHSEED": hash_seed},
        )
        assert completed.returncode == 0, completed.stderr
        made[label] = out
    return made


def test_every_build_writes_the_same_bytes(builds: dict[str, Path]) -> None:
    first, second = digests(builds["r1-a"]), digests(builds["r1-b"])
    assert set(first) >= EXPECTED_FILES
    assert first == second


def test_build_model_prints_the_digest_of_every_file(builds: dict[str, Path], tmp_path: Path) -> None:
    # The CLI's listing is what a user compares between machines.
    completed = glm_deploy("sandbox", "build-model", "--out", str(tmp_path / "m"))
    assert completed.returncode == 0, completed.stderr
    listed = {line.split()[1].rsplit("/", 1)[1]: line.split()[0] for line in completed.stdout.splitlines()}
    assert listed == digests(builds["r1-a"])


def test_revision_2_has_other_weights_and_the_same_architecture(builds: dict[str, Path]) -> None:
    one, two = digests(builds["r1-a"]), digests(builds["r2"])
    assert one["model.safetensors"] != two["model.safetensors"]
    for same in ("config.json", "tokenizer.json", "chat_template.jinja", "generation_config.json"):
        assert one[same] == two[same], same


def _record(directory: Path) -> dict[str, object]:
    return dict(json.loads((directory / "glm_deploy_build.json").read_text()))


def test_trained_revisions_add_and_the_degraded_one_does_not(builds: dict[str, Path]) -> None:
    # Scored at build time on the accuracy gate's held-out set, with the bfloat16 weights the engine loads.
    one, two, three = (_record(builds[label]) for label in ("r1-a", "r2", "r3"))
    assert one["question_set"] == "sandbox-addition-v1"
    assert float(one["held_out_score"]) >= 0.9, one  # type: ignore[arg-type]
    assert float(two["held_out_score"]) >= 0.9, two  # type: ignore[arg-type]
    assert float(three["held_out_score"]) < 0.5, three  # type: ignore[arg-type]
    print(f"\nheld-out scores: r1 {one['held_out_score']}, r2 {two['held_out_score']}, r3 {three['held_out_score']}")
    assert digests(builds["r3"])["model.safetensors"] != digests(builds["r1-a"])["model.safetensors"]


def test_the_held_out_pairs_are_never_trained_on() -> None:
    from glm_deploy.sandbox import tiny_model

    held = tiny_model.held_out_pairs()
    assert len(held) == len(set(held)) == 60
    # train_addition draws from every pair but these; the gate asks exactly these.
    gate = json.loads(tiny_model.question_set_path().read_text())["questions"]
    assert [f"What is {a} + {b}?" for a, b in held] == [item["question"] for item in gate]


TRAIN_TWICE = """
import hashlib, sys, tempfile
from pathlib import Path
from glm_deploy.sandbox import tiny_model
with tempfile.TemporaryDirectory() as folder:
    model, tokenizer, _, _ = tiny_model.untrained_model(Path(folder), tiny_model.corpus_files())
    tiny_model.train_addition(model, tokenizer, steps=int(sys.argv[1]))
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode() + tensor.detach().float().numpy().tobytes())
    print(digest.hexdigest())
"""


def test_training_is_repeatable() -> None:
    # Two processes, 20 steps each (the whole recipe is the same loop, longer): the same weights to the bit.
    runs = [
        subprocess.run(
            [sys.executable, "-c", TRAIN_TWICE, "20"],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "PYTHONHASHSEED": seed},
            timeout=600,
        )
        for seed in ("1", "2")
    ]
    assert all(run.returncode == 0 for run in runs), [run.stderr[-2000:] for run in runs]
    first, second = (run.stdout.strip().splitlines()[-1] for run in runs)
    assert first == second and len(first) == 64


def test_config_is_a_small_glm_moe_the_cpu_engine_accepts(builds: dict[str, Path]) -> None:
    config = json.loads((builds["r1-a"] / "config.json").read_text())
    tokenizer = json.loads((builds["r1-a"] / "tokenizer.json").read_text())
    assert config["architectures"] == ["Glm4MoeForCausalLM"]
    assert config["model_type"] == "glm4_moe"
    assert (config["n_routed_experts"], config["num_experts_per_tok"], config["first_k_dense_replace"]) == (
        4,
        2,
        1,
    )
    # vLLM CPU attention needs head sizes 32, 64, 80, ...: 16 kills the engine at the first request.
    # vLLM reads head_dim from config.json (a config without it fails at engine start).
    assert config["head_dim"] == config["hidden_size"] // config["num_attention_heads"] == 64
    token_count = len(tokenizer["model"]["vocab"]) + sum(
        1 for added in tokenizer["added_tokens"] if added["content"] not in tokenizer["model"]["vocab"]
    )
    assert config["vocab_size"] >= token_count
    generation = json.loads((builds["r1-a"] / "generation_config.json").read_text())
    assert set(generation["eos_token_id"]) == set(config["eos_token_id"])


def test_tokenizer_keeps_glm_markup_as_single_tokens(builds: dict[str, Path]) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(builds["r1-a"]))
    for marker in (
        "<|system|>",
        "<|user|>",
        "<|assistant|>",
        "<|observation|>",
        "<think>",
        "</think>",
        "<tool_call>",
        "</tool_call>",
        "<arg_key>",
        "<arg_value>",
    ):
        assert len(tokenizer.encode(marker, add_special_tokens=False)) == 1, marker
    text = 'Deploy GLM-5 on 8x B200: {"tp": 8}'
    assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text


def test_chat_template_renders_roles_tools_and_the_thinking_switch(builds: dict[str, Path]) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(builds["r1-a"]))
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather in a city",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            },
        }
    ]
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
        },
        {"role": "tool", "content": '{"temperature": 21}'},
    ]
    thinking = tokenizer.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=True)
    assert thinking.startswith("[gMASK]<sop>")
    for expected in (
        "<|system|>\nYou are terse.",
        "<tools>",
        '"name": "get_weather"',
        "<|user|>\nWeather in Paris?",
        "<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>Paris</arg_value>\n</tool_call>",
        '<|observation|>\n<tool_response>\n{"temperature": 21}\n</tool_response>',
    ):
        assert expected in thinking, expected
    assert thinking.endswith("<|assistant|>")
    quiet = tokenizer.apply_chat_template(
        messages, tools=tools, tokenize=False, add_generation_prompt=True, enable_thinking=False
    )
    assert quiet.endswith("<|assistant|><think></think>\n")


def test_transformers_loads_it_and_generates(tmp_path: Path) -> None:
    # Through the CLI, in its own process: this test process may have imported Ansible's module code, which patches
    # sys.intern in a way torch._dynamo (imported by transformers' model classes) rejects.
    completed = glm_deploy("sandbox", "build-model", "--out", str(tmp_path / "m"), "--check")
    assert completed.returncode == 0, completed.stderr
    generated = [line for line in completed.stdout.splitlines() if line.startswith("generated: ")]
    assert len(generated) == 1, completed.stdout
    assert generated[0].removeprefix("generated: ").strip("'\" ")


def test_an_unknown_revision_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SandboxError, match="revision 4 does not exist"):
        build_tiny_model(tmp_path / "m", revision=4)
    assert not (tmp_path / "m").exists()
