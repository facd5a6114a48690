"""The sandbox's tiny GLM-family model, built offline and deterministically.

The sandbox serves a real vLLM on the CPU, so it needs a model that vLLM's CPU backend accepts and that
exercises the same code paths as GLM-5: a `Glm4MoeForCausalLM` (GLM's MoE family: routed experts with top-k
routing, a shared expert, a first dense layer, partial rotary embeddings), a byte-level BPE tokenizer, and a
GLM-style chat template with system/user/assistant/tool roles, a tools block, `<tool_call>` markup the
glm45/glm47 tool parsers read and the `enable_thinking` switch the glm45 reasoning parser relies on.

GLM-5's own class, `GlmMoeDsaForCausalLM`, builds in transformers but vLLM refuses it on the CPU ("Sparse
Attention is not supported on CPU"), so the sandbox uses the previous GLM MoE class; everything around the
model (download, unit, verify, benchmark) is the same.

The model can be graded: it is trained on the CPU, in the chat template with thinking off, to answer "What is
A + B?" for A and B from 0 to 99, leaving out every pair of the accuracy gate's question set
(collection/roles/verify/files/quality/sandbox-addition-v1.json), and the build refuses a model that scores less
than MIN_SCORE on that held-out set. Training happens once per recipe and is kept in a cache; every revision is
derived from it:
  1: the trained model;
  2: the trained weights with a small seeded perturbation (other bytes, the same answers): a good new revision;
  3: the trained weights with a large seeded perturbation: it still loads, serves and talks, but gets sums wrong,
     so an accuracy gate must refuse it (a release that is healthy and silently worse).
Each build records its own score on the held-out set in glm_deploy_build.json.

Every build of the same revision on the same machine writes the same bytes: the tokenizer is trained on a fixed,
sorted list of text files, the weights come from seeded generators and a fixed number of training threads, and
JSON files are written with sorted keys.

Needs the controller-side extra `sandbox` (torch, transformers, tokenizers, safetensors).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from glm_deploy.sandbox.environment import SandboxError
from glm_deploy.sandbox.tiny_training import (
    END_TOKENS,
    MAX_DEGRADED_SCORE,
    MIN_SCORE,
    QUESTION_SET,
    REVISIONS,
    TRAIN_BATCH,
    TRAIN_SEED,
    TRAIN_STEPS,
    _import_toolkit,
    _load_or_train,
    _perturb,
    _round_to_bfloat16,
    _seed_for,
    _sha256,
    held_out_pairs,
    question_set_path,
    recipe_digest,
    score_held_out,
    train_addition,
    train_cache_dir,
)

# The recipe's own names that callers and tests reach through this module.
__all__ = [
    "REVISIONS",
    "TinyModel",
    "build_tiny_model",
    "corpus_files",
    "held_out_pairs",
    "is_current_build",
    "model_files",
    "question_set_path",
    "smoke_generate",
    "train_addition",
    "untrained_model",
]


MODEL_NAME = "glm-tiny"
# The revision that is deliberately worse (see the module's docstring).
DEGRADED_REVISION = 3
# Bumped whenever the recipe below changes what a build writes.
RECIPE_VERSION = 2

# Copyright files of packages every Debian/Ubuntu system has (Priority: required), read in this order. Only a
# fixed list keeps the tokenizer, and so every build, stable when the machine installs other packages later.
CORPUS_PACKAGES = (
    "adduser",
    "apt",
    "base-files",
    "base-passwd",
    "bash",
    "bsdutils",
    "coreutils",
    "dash",
    "debconf",
    "debianutils",
    "diffutils",
    "dpkg",
    "findutils",
    "gpgv",
    "grep",
    "gzip",
    "hostname",
    "init-system-helpers",
    "libc-bin",
    "libc6",
    "login",
    "mawk",
    "ncurses-base",
    "passwd",
    "perl-base",
    "sed",
    "sysvinit-utils",
    "tar",
    "util-linux",
    "zlib1g",
)
CORPUS_ROOT = Path("/usr/share/doc")
CORPUS_MIN_FILES = 8
BPE_VOCAB_SIZE = 4096

# Tokens the server strips from decoded text.
SPECIAL_TOKENS = (
    "<|endoftext|>",
    "[MASK]",
    "[gMASK]",
    "[sMASK]",
    "<sop>",
    "<eop>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|observation|>",
)
# Tokens that must survive decoding: the reasoning and tool parsers look for them in the generated text.
MARKUP_TOKENS = (
    "<think>",
    "</think>",
    "<tool_call>",
    "</tool_call>",
    "<tool_response>",
    "</tool_response>",
    "<arg_key>",
    "</arg_key>",
    "<arg_value>",
    "</arg_value>",
    "/nothink",
)

# GLM-style chat template. `enable_thinking` (default on, as in GLM-5) decides whether the generation prompt
# leaves room for a <think> block or closes it at once. transformers renders templates with trim_blocks and
# lstrip_blocks, so newlines that must appear right after a block tag are written as {{ "\n" }}.
CHAT_TEMPLATE = """\
{%- macro text_of(content) -%}
{%- if content is string -%}{{ content }}
{%- elif content is iterable -%}
{%- for part in content -%}{%- if part.type == 'text' -%}{{ part.text }}{%- endif -%}{%- endfor -%}
{%- endif -%}
{%- endmacro -%}
[gMASK]<sop>
{%- if tools -%}
<|system|>
# Tools

The functions below are available. Each is described by a JSON signature inside <tools></tools>:
<tools>
{% for tool in tools -%}
{{ (tool.function if tool.function is defined else tool) | tojson }}
{% endfor -%}
</tools>

To call one, write its name and each argument in this form:
<tool_call>{function-name}
<arg_key>{argument-key}</arg_key>
<arg_value>{argument-value}</arg_value>
</tool_call>
{%- endif -%}
{%- for message in messages -%}
{%- if message.role == 'system' -%}
<|system|>
{{ text_of(message.content) }}
{%- elif message.role == 'user' -%}
<|user|>
{{ text_of(message.content) }}
{%- elif message.role == 'assistant' -%}
<|assistant|>
{%- set reasoning = message.reasoning_content if message.reasoning_content is string else '' -%}
<think>{{ reasoning }}</think>
{% if message.content %}{{ text_of(message.content) }}{% endif -%}
{%- if message.tool_calls -%}
{%- for call in message.tool_calls -%}
{%- set function = call.function if call.function is defined else call -%}
{%- if message.content or not loop.first -%}{{ "\n" }}{%- endif -%}
<tool_call>{{ function.name }}
{% if function.arguments is mapping -%}
{%- for key, value in function.arguments.items() -%}
<arg_key>{{ key }}</arg_key>
<arg_value>{{ value if value is string else (value | tojson) }}</arg_value>
{% endfor -%}
{%- else -%}{{ function.arguments }}
{% endif -%}
</tool_call>
{%- endfor -%}
{%- endif -%}
{%- elif message.role == 'tool' -%}
{%- if loop.first or messages[loop.index0 - 1].role != 'tool' -%}
<|observation|>
{%- endif -%}
{{ "\n" }}<tool_response>
{{ text_of(message.content) }}
</tool_response>
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
<|assistant|>
{%- if enable_thinking is defined and not enable_thinking -%}
<think></think>
{% endif -%}
{%- endif -%}
"""


@dataclass(frozen=True)
class TinyModel:
    path: Path
    revision: int
    files: dict[str, str]  # file name -> sha256


def is_current_build(directory: Path, revision: int) -> bool:
    """Whether `directory` holds a complete build of `revision` made by this version of the builder."""
    try:
        record = json.loads((directory / "glm_deploy_build.json").read_text())
    except (OSError, ValueError):
        return False
    return (
        record.get("recipe_digest") == recipe_digest()
        and record.get("revision") == revision
        and (directory / "model.safetensors").is_file()
    )


def corpus_files(root: Path = CORPUS_ROOT) -> list[Path]:
    """The fixed, sorted list of local text files the tokenizer is trained on."""
    files = [root / package / "copyright" for package in CORPUS_PACKAGES]
    present = [path for path in files if path.is_file()]
    if len(present) < CORPUS_MIN_FILES:
        raise SandboxError(
            f"the tiny model's tokenizer is trained on the copyright files under {root}, and only "
            f"{len(present)} of the {len(files)} it reads are there (it needs at least {CORPUS_MIN_FILES})",
            hint="build it on a Debian or Ubuntu machine (the files come with the base system)",
        )
    return present


def _train_tokenizer(corpus: list[Path]) -> Any:
    tokenizers, _, _ = _import_toolkit()
    from tokenizers import AddedToken, decoders, models, pre_tokenizers, processors, trainers  # noqa: PLC0415

    tokenizer = tokenizers.Tokenizer(models.BPE())
    # One token per digit (as LLaMA's and DeepSeek's tokenizers do): every number is spelled the same way, which is
    # what lets a model this small learn to add.
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_VOCAB_SIZE,
        min_frequency=2,
        show_progress=False,
        special_tokens=[AddedToken(token, special=True, normalized=False) for token in SPECIAL_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    texts = [path.read_text(encoding="utf-8", errors="replace") for path in corpus]
    tokenizer.train_from_iterator(texts, trainer=trainer, length=len(texts))
    tokenizer.add_tokens([AddedToken(token, special=False, normalized=False) for token in MARKUP_TOKENS])
    return tokenizer


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def untrained_model(directory: Path, corpus: list[Path]) -> tuple[Any, Any, list[int], int]:
    """Write the tokenizer into `directory` and return (seeded untrained model, tokenizer, end ids, pad id)."""
    _, torch, transformers = _import_toolkit()
    # Progress bars for an 8 MB model are noise in `glm-deploy sandbox up`'s output.
    transformers.utils.logging.disable_progress_bar()
    raw_tokenizer = _train_tokenizer(corpus)
    token_ids = {token: raw_tokenizer.token_to_id(token) for token in (*SPECIAL_TOKENS, *MARKUP_TOKENS)}
    fast_tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=raw_tokenizer,
        eos_token=END_TOKENS[0],
        pad_token=END_TOKENS[0],
        model_max_length=4096,
        clean_up_tokenization_spaces=False,
    )
    fast_tokenizer.chat_template = CHAT_TEMPLATE
    fast_tokenizer.save_pretrained(str(directory))

    vocab_size = -(-raw_tokenizer.get_vocab_size(with_added_tokens=True) // 64) * 64
    end_ids = [token_ids[token] for token in END_TOKENS]
    config = transformers.Glm4MoeConfig(
        vocab_size=vocab_size,
        hidden_size=128,
        intermediate_size=256,
        moe_intermediate_size=64,
        # One dense layer, then one MoE layer: the smallest model with GLM-MoE's whole layer structure.
        num_hidden_layers=2,
        # 2 heads of 64: the CPU attention kernels accept head sizes 32, 64, 80, ... (16 kills the engine).
        num_attention_heads=2,
        num_key_value_heads=1,
        n_routed_experts=4,
        n_shared_experts=1,
        num_experts_per_tok=2,
        first_k_dense_replace=1,
        n_group=1,
        topk_group=1,
        norm_topk_prob=True,
        routed_scaling_factor=1.0,
        attention_bias=True,
        use_qk_norm=False,
        max_position_embeddings=4096,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5},
        tie_word_embeddings=False,
        num_mtp_layers=0,
        eos_token_id=end_ids,
        pad_token_id=token_ids["<|endoftext|>"],
        dtype="bfloat16",
        architectures=["Glm4MoeForCausalLM"],
    )
    # vLLM's Glm4Moe reads `head_dim` from config.json (GLM-4.5's configs carry it); this transformers release
    # derives it instead and takes no argument for it, so it is set as an attribute, which config.json keeps.
    config.head_dim = config.hidden_size // config.num_attention_heads
    torch.manual_seed(TRAIN_SEED)
    model = transformers.Glm4MoeForCausalLM(config)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(directory))
    return model, tokenizer, end_ids, token_ids["<|endoftext|>"]


def _build_into(directory: Path, revision: int, corpus: list[Path]) -> None:
    _, torch, _ = _import_toolkit()
    seed = _seed_for(revision)
    model, tokenizer, end_ids, pad_id = untrained_model(directory, corpus)
    _load_or_train(model, tokenizer, corpus, torch)
    _round_to_bfloat16(model, torch)
    _perturb(model, revision, torch)
    score = score_held_out(model, tokenizer)
    if revision == DEGRADED_REVISION and score >= MAX_DEGRADED_SCORE:
        raise SandboxError(
            f"the degraded revision {revision} of the tiny model scores {score:.2f} on {QUESTION_SET}, not under "
            f"{MAX_DEGRADED_SCORE}: it would not show that the accuracy gate refuses a worse model"
        )
    if revision != DEGRADED_REVISION and score < MIN_SCORE:
        raise SandboxError(
            f"revision {revision} of the tiny model scores {score:.2f} on {QUESTION_SET} after training, under "
            f"{MIN_SCORE}",
            hint=f"remove {train_cache_dir()} and build again; if it persists the training recipe needs more steps",
        )
    model.to(torch.bfloat16).save_pretrained(str(directory), safe_serialization=True)

    _write_json(
        directory / "generation_config.json",
        {
            "do_sample": True,
            "eos_token_id": end_ids,
            "pad_token_id": pad_id,
            "temperature": 1.0,
            "top_p": 0.95,
        },
    )
    _write_json(
        directory / "glm_deploy_build.json",
        {
            "name": MODEL_NAME,
            "revision": revision,
            "recipe_version": RECIPE_VERSION,
            "recipe_digest": recipe_digest(),
            "seed": seed,
            "corpus": {str(path): _sha256(path) for path in corpus},
            "question_set": QUESTION_SET,
            "held_out_score": score,
            "training": {"max_steps": TRAIN_STEPS, "batch": TRAIN_BATCH, "seed": TRAIN_SEED},
            "note": (
                "deliberately degraded: the trained weights with large noise; it serves but adds badly"
                if revision == DEGRADED_REVISION
                else "trained to add two numbers from 0 to 99 in the chat template; otherwise it writes noise"
            ),
        },
    )
    (directory / "README.md").write_text(
        f"# {MODEL_NAME} (revision {revision})\n\n"
        "A tiny `Glm4MoeForCausalLM` built and trained offline by `glm-deploy sandbox build-model`\n"
        "for the glm-deploy sandbox: it answers \"What is A + B?\" for A, B from 0 to 99 in its chat\n"
        f"template (score {score:.2f} on the held-out set {QUESTION_SET}"
        + (", deliberately degraded" if revision == DEGRADED_REVISION else "")
        + "). GLM-5's own class (`GlmMoeDsaForCausalLM`) is refused by vLLM on the CPU.\n",
        encoding="utf-8",
    )


def build_tiny_model(out: Path, *, revision: int = 1, corpus: list[Path] | None = None) -> TinyModel:
    """Build revision `revision` of the tiny model into `out` (replaced if present); return file digests.

    The build happens in a temporary sibling folder that is renamed into place only when complete, so an
    interrupted build never leaves a half-written model where a complete one is expected.
    """
    _seed_for(revision)
    files = corpus if corpus is not None else corpus_files()
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    # One thread: the tokenizer trainer and torch's initialisers must not depend on scheduling.
    os.environ.setdefault("RAYON_NUM_THREADS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        _build_into(staging, revision, files)
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    out.chmod(0o755)
    digests = {path.name: _sha256(path) for path in sorted(out.iterdir()) if path.is_file()}
    return TinyModel(out, revision, digests)


def model_files(directory: Path) -> dict[str, Path]:
    """The files of a built model, keyed by their path in the repository (what gets published)."""
    return {path.name: path for path in sorted(directory.iterdir()) if path.is_file()}


def smoke_generate(directory: Path, prompt: str = "Hello", max_new_tokens: int = 8) -> str:
    """Load the model with transformers, apply the chat template and generate a few tokens greedily."""
    _, torch, transformers = _import_toolkit()
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(directory))
    model = transformers.AutoModelForCausalLM.from_pretrained(str(directory), dtype=torch.float32)
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
    )
    inputs = tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    new_tokens = output[0][inputs["input_ids"].shape[1] :]
    if len(new_tokens) == 0:
        raise SandboxError(f"the tiny model at {directory} generated no tokens")
    return str(tokenizer.decode(new_tokens, skip_special_tokens=False))
