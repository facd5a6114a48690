"""Training the sandbox's tiny model to add (see tiny_model.py): the recipe, the held-out set, the cache.

Training is the slow part of a build (a few minutes on 2 cores) and every revision starts from its result, so the
trained weights are kept in a cache keyed by the recipe (this file's and tiny_model.py's source, the held-out set)
and the tokenizer's corpus. Builds that run at the same time (two sandboxes started together) train once: the
first holds a lock on the cache entry while it trains and the others wait for it, then load it.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import sys
import time
from pathlib import Path
from typing import Any

from glm_deploy.paths import collection_dir
from glm_deploy.sandbox.environment import SandboxError, exclusive

# The revisions a build can make (tiny_model.py says what each is).
REVISIONS = (1, 2, 3)
# Tokens that end an answer.
END_TOKENS = ("<|endoftext|>", "<|user|>", "<|observation|>")

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


def question_set_path() -> Path:
    """The accuracy gate's question set for the sandbox model (shipped with the collection's verify role)."""
    return collection_dir() / "roles" / "verify" / "files" / "quality" / f"{QUESTION_SET}.json"


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


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _load_or_train(model: Any, tokenizer: Any, corpus: list[Path], torch: Any) -> None:
    """Load the trained weights for this recipe and corpus from the cache, or train and keep them there.

    The cache entry's lock is held while training, so a build that starts meanwhile waits and loads the result
    instead of training a second time beside it.
    """
    key = hashlib.sha256(recipe_digest().encode())
    for path in corpus:
        key.update(_sha256(path).encode())
    cached = train_cache_dir() / f"trained-{key.hexdigest()[:32]}.safetensors"
    if _load_cached(model, cached):
        return
    waiting = f"waiting for the build training the tiny model ({cached.name})"
    with exclusive(cached.with_name(f".{cached.name}.lock"), waiting):
        if _load_cached(model, cached):
            return
        started = time.monotonic()
        print(f"training the tiny model to add (at most {TRAIN_STEPS} steps on the CPU)", file=sys.stderr, flush=True)
        taken = train_addition(model, tokenizer, progress=True)
        print(f"trained in {time.monotonic() - started:.0f} s ({taken} steps)", file=sys.stderr, flush=True)
        _save_cached(model, cached)


def _load_cached(model: Any, cached: Path) -> bool:
    from safetensors.torch import load_file  # noqa: PLC0415

    if not cached.is_file():
        return False
    try:
        model.load_state_dict(load_file(str(cached)), strict=True)
    except (OSError, RuntimeError, ValueError):
        cached.unlink(missing_ok=True)  # a damaged cache entry: train again
        return False
    return True


def _save_cached(model: Any, cached: Path) -> None:
    from safetensors.torch import save_file  # noqa: PLC0415

    staging = cached.with_name(f".{cached.name}.{os.getpid()}")
    state = {name: tensor.contiguous() for name, tensor in model.state_dict().items()}
    save_file(state, str(staging))
    staging.rename(cached)


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


def _seed_for(revision: int) -> int:
    if revision not in REVISIONS:
        raise SandboxError(
            f"tiny model revision {revision!r} does not exist",
            hint=f"use one of {', '.join(map(str, REVISIONS))}",
        )
    return 20260 + revision


def recipe_digest() -> str:
    """A digest of the builder's source (this file and tiny_model.py) and of the held-out set: a build made
    otherwise is rebuilt, not reused."""
    digest = hashlib.sha256(Path(__file__).read_bytes())
    digest.update(Path(__file__).with_name("tiny_model.py").read_bytes())
    digest.update(question_set_path().read_bytes())
    return digest.hexdigest()
