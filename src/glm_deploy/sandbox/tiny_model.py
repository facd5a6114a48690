"""The sandbox's tiny GLM-family model, built offline and deterministically.

The sandbox serves a real vLLM on the CPU, so it needs a model that vLLM's CPU backend accepts and that
exercises the same code paths as GLM-5: a `Glm4MoeForCausalLM` (GLM's MoE family: routed experts with top-k
routing, a shared expert, a first dense layer, partial rotary embeddings), a byte-level BPE tokenizer, and a
GLM-style chat template with system/user/assistant/tool roles, a tools block, `<tool_call>` markup the
glm45/glm47 tool parsers read and the `enable_thinking` switch the glm45 reasoning parser relies on.

GLM-5's own class, `GlmMoeDsaForCausalLM`, builds in transformers but vLLM refuses it on the CPU ("Sparse
Attention is not supported on CPU"), so the sandbox uses the previous GLM MoE class; everything around the
model (download, unit, verify, benchmark) is the same.

Every build of the same revision writes the same bytes: the tokenizer is trained on a fixed, sorted list of
text files, the weights come from a seeded generator, and JSON files are written with sorted keys. Revision 2
is the same architecture with other weights (another seed), used to test redeploying a new model revision.

Needs the controller-side extra `sandbox` (torch, transformers, tokenizers, safetensors).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from glm_deploy.sandbox.environment import SandboxError

MODEL_NAME = "glm-tiny"
REVISIONS = (1, 2)
# Bumped whenever the recipe below changes what a build writes.
RECIPE_VERSION = 1

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
END_TOKENS = ("<|endoftext|>", "<|user|>", "<|observation|>")

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


def recipe_digest() -> str:
    """A digest of this builder's source: a build made by other code is rebuilt, not reused."""
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()


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


def _seed_for(revision: int) -> int:
    if revision not in REVISIONS:
        raise SandboxError(
            f"tiny model revision {revision!r} does not exist",
            hint=f"use one of {', '.join(map(str, REVISIONS))}",
        )
    return 20260 + revision


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


def _import_toolkit() -> tuple[Any, Any, Any]:
    # Imported on demand: these are the optional `sandbox` extra, and torch alone takes seconds to import.
    try:
        import tokenizers  # noqa: PLC0415
        import torch  # noqa: PLC0415
        import transformers  # noqa: PLC0415
    except ImportError as error:
        raise SandboxError(
            f"building the tiny model needs torch, transformers and tokenizers on the controller ({error})",
            hint="install the sandbox extra: pip install -e '.[sandbox]' (torch==2.13.0 as a CPU build: "
            "PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu)",
        ) from error
    return tokenizers, torch, transformers


def _train_tokenizer(corpus: list[Path]) -> Any:
    tokenizers, _, _ = _import_toolkit()
    from tokenizers import AddedToken, decoders, models, pre_tokenizers, processors, trainers  # noqa: PLC0415

    tokenizer = tokenizers.Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
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


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _build_into(directory: Path, revision: int, corpus: list[Path]) -> None:
    _, torch, transformers = _import_toolkit()
    seed = _seed_for(revision)
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
        hidden_size=256,
        intermediate_size=512,
        moe_intermediate_size=128,
        num_hidden_layers=3,
        # 4 heads of 64: the CPU attention kernels accept head sizes 32, 64, 80, ... (16 kills the engine).
        num_attention_heads=4,
        num_key_value_heads=2,
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
    torch.manual_seed(seed)
    model = transformers.Glm4MoeForCausalLM(config).to(torch.bfloat16)
    model.eval()
    model.save_pretrained(str(directory), safe_serialization=True)

    _write_json(
        directory / "generation_config.json",
        {
            "do_sample": True,
            "eos_token_id": end_ids,
            "pad_token_id": token_ids["<|endoftext|>"],
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
            "note": "random weights: the text it writes is noise; it exists to exercise serving, not quality",
        },
    )
    (directory / "README.md").write_text(
        f"# {MODEL_NAME} (revision {revision})\n\n"
        "A tiny random-weight `Glm4MoeForCausalLM` built offline by `glm-deploy sandbox build-model`\n"
        "for the glm-deploy sandbox. GLM-5's own class (`GlmMoeDsaForCausalLM`) is refused by vLLM on\n"
        "the CPU.\n",
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
