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

import hashlib
import json
import os
import random
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from glm_deploy.paths import collection_dir
from glm_deploy.sandbox.environment import SandboxError

MODEL_NAME = "glm-tiny"
REVISIONS = (1, 2, 3)
# The revision that is deliberately worse (see the module's docstring).
DEGRADED_REVISION = 3
# Bumped whenever the recipe below changes what a build writes.
RECIPE_VERSION = 2

# The question set the accuracy gate asks the sandbox model; its pairs are held out of training.
QUESTION_SET = "sandbox-addition-v1"
# The score on the held-out set a good revision must reach (the catalog's floor for glm-tiny).
MIN_SCORE = 0.9
# The score the degraded revision must stay under, so that the gate's refusal is certain, not luck.
MAX_DEGRADED_SCORE = 0.5
# Training: a fixed recipe (AdamW with a one-cycle schedule) on a fixed number of threads, so that a build is
# repeatable on one machine.
TRAIN_STEPS = 6000
TRAIN_WARMUP = 100
TRAIN_BATCH = 64
TRAIN_LEARNING_RATE = 3e-3
TRAIN_THREADS = 2
TRAIN_SEED = 0
# Early stop: the greedy score on VALIDATION_SIZE pairs outside training and the gate's set, every VALIDATION_EVERY
# steps from VALIDATION_FROM on.
VALIDATION_SIZE = 60
VALIDATION_TARGET = 0.97
VALIDATION_EVERY = 250
VALIDATION_FROM = 750
# Steps after the target is reached, with the rate decaying to zero.
TRAIN_SETTLE = 500
# Relative size of the seeded noise added to every weight matrix, per derived revision.
PERTURBATION = {2: 0.002, 3: 1.2}

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


def question_set_path() -> Path:
    """The accuracy gate's question set for the sandbox model (shipped with the collection's verify role)."""
    return collection_dir() / "roles" / "verify" / "files" / "quality" / f"{QUESTION_SET}.json"


def recipe_digest() -> str:
    """A digest of this builder's source and of the held-out set: a build made otherwise is rebuilt, not reused."""
    digest = hashlib.sha256(Path(__file__).read_bytes())
    digest.update(question_set_path().read_bytes())
    return digest.hexdigest()


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


_QUESTION = re.compile(r"What is (\d{1,2}) \+ (\d{1,2})\?")


def held_out_pairs() -> list[tuple[int, int]]:
    """The (A, B) pairs the accuracy gate asks about, in the set's order; training never sees them."""
    try:
        document = json.loads(question_set_path().read_text(encoding="utf-8"))
        pairs = []
        for item in document["questions"]:
            match = _QUESTION.fullmatch(item["question"])
            if match is None or int(item["answer"]) != int(match[1]) + int(match[2]):
                raise ValueError(f"question {item!r} is not a sum this builder can learn")
            pairs.append((int(match[1]), int(match[2])))
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise SandboxError(f"cannot read the tiny model's held-out set {question_set_path()}: {error}") from None
    return pairs


def train_cache_dir() -> Path:
    """Where trained weights are kept between builds (training is the slow part, every revision starts from it)."""
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "glm-deploy" / "tiny-model"


def _chat_prompt(tokenizer: Any, question: str) -> list[int]:
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True, enable_thinking=False
    )
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _validation_pairs(held: set[tuple[int, int]]) -> list[tuple[int, int]]:
    """Pairs set aside to decide when training is done: neither trained on nor asked by the gate."""
    rest = sorted({(a, b) for a in range(100) for b in range(100)} - held)
    return random.Random(TRAIN_SEED + 1).sample(rest, VALIDATION_SIZE)  # noqa: S311 - a fixed draw, not a secret


def train_addition(model: Any, tokenizer: Any, *, steps: int = TRAIN_STEPS, progress: bool = False) -> int:
    """Train `model` in place to answer "What is A + B?" in the chat template; returns the steps taken.

    Training stops early once greedy answers on a validation set (pairs outside both the training data and the
    gate's held-out set) reach VALIDATION_TARGET, checked every VALIDATION_EVERY steps; `steps` is the most it
    takes. Small models learn addition in a sudden drop of the loss whose step varies; stopping on the score
    keeps the build short when it comes early and lets it run on when it comes late.
    """
    _, torch, _ = _import_toolkit()
    held = set(held_out_pairs())
    validation = _validation_pairs(held)
    pairs = [(a, b) for a in range(100) for b in range(100) if (a, b) not in held and (a, b) not in set(validation)]
    end = tokenizer.convert_tokens_to_ids(END_TOKENS[0])
    examples = [
        (
            _chat_prompt(tokenizer, f"What is {a} + {b}?"),
            [*tokenizer(str(a + b), add_special_tokens=False)["input_ids"], end],
        )
        for a, b in pairs
    ]
    length = max(len(prompt) + len(answer) for prompt, answer in examples)
    threads = torch.get_num_threads()
    torch.set_num_threads(min(TRAIN_THREADS, os.cpu_count() or 1))
    try:
        generator = random.Random(TRAIN_SEED)  # noqa: S311 - picks training examples, repeatably
        torch.manual_seed(TRAIN_SEED)
        optimizer = torch.optim.AdamW(model.parameters(), lr=TRAIN_LEARNING_RATE, weight_decay=0.01, betas=(0.9, 0.98))
        # A short warm-up, then a constant rate: the end of training is decided by the validation score.
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / TRAIN_WARMUP))
        batches = {"examples": examples, "length": length, "end": end, "generator": generator, "torch": torch}
        model.train()
        started = time.monotonic()
        for step in range(steps):
            loss = _step(model, optimizer, **batches)
            schedule.step()
            if (step + 1) % VALIDATION_EVERY == 0 and step + 1 >= VALIDATION_FROM:
                model.eval()
                score = _score(model, tokenizer, validation)
                model.train()
                if progress:
                    elapsed = time.monotonic() - started
                    print(
                        f"  step {step + 1}: loss {loss.item():.3f}, validation {score:.2f}, {elapsed:.0f} s",
                        file=sys.stderr,
                    )
                if score >= VALIDATION_TARGET:
                    _settle(model, optimizer, **batches)
                    return step + 1 + TRAIN_SETTLE
        return steps
    finally:
        torch.set_num_threads(threads)
        model.eval()


def _step(
    model: Any,
    optimizer: Any,
    *,
    examples: list[tuple[list[int], list[int]]],
    length: int,
    end: int,
    generator: random.Random,
    torch: Any,
) -> Any:
    """One optimiser step on a batch drawn from `examples`; returns the loss."""
    batch = [examples[generator.randrange(len(examples))] for _ in range(TRAIN_BATCH)]
    ids = torch.full((len(batch), length), end, dtype=torch.long)
    labels = torch.full((len(batch), length), -100, dtype=torch.long)
    for row, (prompt, answer) in enumerate(batch):
        ids[row, : len(prompt) + len(answer)] = torch.tensor(prompt + answer)
        # Position i predicts token i + 1: the answer is learnt from the prompt's last position on.
        labels[row, len(prompt) - 1 : len(prompt) + len(answer) - 1] = torch.tensor(answer)
    hidden = model.model(input_ids=ids).last_hidden_state
    mask = labels != -100
    # Logits only where there is something to learn: the output layer is most of this model's compute.
    loss = torch.nn.functional.cross_entropy(model.lm_head(hidden[mask]), labels[mask])
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad()
    return loss


def _settle(model: Any, optimizer: Any, **batches: Any) -> None:
    """TRAIN_SETTLE more steps with the rate falling to zero: a constant rate leaves the weights noisy."""
    base = [group["lr"] for group in optimizer.param_groups]
    for step in range(TRAIN_SETTLE):
        for group, rate in zip(optimizer.param_groups, base, strict=True):
            group["lr"] = rate * (1 - step / TRAIN_SETTLE)
        _step(model, optimizer, **batches)


def score_held_out(model: Any, tokenizer: Any) -> float:
    """Greedy answers to the gate's held-out questions, scored exactly as the accuracy gate scores them."""
    return _score(model, tokenizer, held_out_pairs())


def _score(model: Any, tokenizer: Any, pairs: list[tuple[int, int]]) -> float:
    _, torch, _ = _import_toolkit()
    end_ids = {tokenizer.convert_tokens_to_ids(token) for token in END_TOKENS}
    correct = 0
    with torch.no_grad():
        for a, b in pairs:
            ids = _chat_prompt(tokenizer, f"What is {a} + {b}?")
            produced: list[int] = []
            for _ in range(6):
                token = int(model(input_ids=torch.tensor([ids + produced])).logits[0, -1].argmax())
                if token in end_ids:
                    break
                produced.append(token)
            correct += tokenizer.decode(produced).strip() == str(a + b)
    return correct / len(pairs)


def _round_to_bfloat16(model: Any, torch: Any) -> None:
    # The published weights are bfloat16: score what the engine will load, not the float32 the training used.
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(parameter.to(torch.bfloat16).to(parameter.dtype))


def _perturb(model: Any, revision: int, torch: Any) -> None:
    scale = PERTURBATION.get(revision)
    if not scale:
        return
    generator = torch.Generator().manual_seed(_seed_for(revision))
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() >= 2:
                noise = torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype)
                parameter.add_(noise * parameter.std() * scale)


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


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _load_or_train(model: Any, tokenizer: Any, corpus: list[Path], torch: Any) -> None:
    """Load the trained weights for this recipe and corpus from the cache, or train and keep them there."""
    from safetensors.torch import load_file, save_file  # noqa: PLC0415

    key = hashlib.sha256(recipe_digest().encode())
    for path in corpus:
        key.update(_sha256(path).encode())
    cached = train_cache_dir() / f"trained-{key.hexdigest()[:32]}.safetensors"
    if cached.is_file():
        try:
            model.load_state_dict(load_file(str(cached)), strict=True)
            return
        except (OSError, RuntimeError, ValueError):
            cached.unlink(missing_ok=True)  # a damaged cache entry: train again
    started = time.monotonic()
    print(f"training the tiny model to add (at most {TRAIN_STEPS} steps on the CPU)", file=sys.stderr, flush=True)
    taken = train_addition(model, tokenizer, progress=True)
    print(f"trained in {time.monotonic() - started:.0f} s ({taken} steps)", file=sys.stderr, flush=True)
    cached.parent.mkdir(parents=True, exist_ok=True)
    staging = cached.with_name(f".{cached.name}.{os.getpid()}")
    state = {name: tensor.contiguous() for name, tensor in model.state_dict().items()}
    save_file(state, str(staging))
    staging.rename(cached)


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
