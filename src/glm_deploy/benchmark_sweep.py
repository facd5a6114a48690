"""A benchmark sweep as measured: its concurrencies, its points, what it measured and what it is compared with.

`glm-deploy benchmark --sweep 1,2,4,8` runs the hardware's benchmark profile once per concurrency (the benchmark
role, `benchmark_concurrencies`); each run leaves vLLM's result JSON in `results/<host>/<stamp>-c<N>.json`. This
module reads them into a `SweepReport`: the points with InferenceX's two axes (output tokens/s per GPU, and
`1000 / median TPOT` as tokens/s per user), the last good release's sweep on the same host and workload (an
earlier report whose release the history records as served successfully) and the catalog's published reference
point. glm_deploy.benchmark_report writes it as a table and a picture.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from glm_deploy.errors import GlmDeployError, InputError
from glm_deploy.release import Release
from glm_deploy.render import Plan

# Bounds of a sweep (the benchmark role checks the same ones in its vars): more points than this is a typo rather
# than a plan, and no endpoint of the catalog's hardware serves more concurrent 8k/2k requests than this.
MAX_POINTS = 16
MAX_CONCURRENCY = 1024

# Result files of a sweep point, as the benchmark role names them on the controller: <stamp>-c<N>.json.
_POINT_FILE = re.compile(r"^(?P<stamp>.+)-c(?P<concurrency>[1-9][0-9]*)\.json$")
REPORT_PREFIX = "sweep-"


# ------------------------------------------------------------------------------------------ concurrencies


def check_concurrencies(values: Iterable[object]) -> list[int]:
    """A sweep's concurrencies: whole numbers from 1 to MAX_CONCURRENCY, ascending, no repeats, at most
    MAX_POINTS. Raises InputError naming the value and what would work."""
    given = list(values)
    example = "e.g. 1,2,4,8,16,32"
    checked: list[int] = []
    for value in given:
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise InputError(f"sweep concurrency {value!r} is not a whole number", hint=example)
        text = str(value).strip()
        if not text.isdigit() or not 1 <= int(text) <= MAX_CONCURRENCY:
            raise InputError(
                f"sweep concurrency {value!r} must be a whole number from 1 to {MAX_CONCURRENCY}", hint=example
            )
        checked.append(int(text))
    if not checked:
        raise InputError("a sweep needs at least one concurrency", hint=example)
    if len(checked) > MAX_POINTS:
        raise InputError(f"a sweep has at most {MAX_POINTS} concurrencies, got {len(checked)}", hint=example)
    if any(later <= earlier for earlier, later in itertools.pairwise(checked)):
        raise InputError(
            f"sweep concurrencies must ascend without repeats, got {','.join(map(str, checked))}",
            hint=f"e.g. {','.join(map(str, sorted(set(checked))))}",
        )
    return checked


def parse_concurrencies(text: str) -> list[int]:
    """`--sweep 1,2,4,8` as a list of concurrencies (see `check_concurrencies`)."""
    parts = [part.strip() for part in text.split(",")]
    if not text.strip() or any(not part for part in parts):
        raise InputError(f"--sweep takes concurrencies separated by commas, got {text!r}", hint="e.g. --sweep 1,2,4,8")
    return check_concurrencies(parts)


# ------------------------------------------------------------------------------------------------ points


def tokens_per_user(tpot_ms: float | None) -> float | None:
    """Tokens/s one user sees while its answer streams: 1000 / TPOT in ms (InferenceX's interactivity)."""
    if tpot_ms is None or tpot_ms <= 0:
        return None
    return 1000.0 / tpot_ms


def _optional_number(data: Mapping[str, Any], key: str) -> float | None:
    value = data.get(key)
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


@dataclass(frozen=True)
class SweepPoint:
    """One concurrency of a sweep: vLLM's result figures and the two derived axes."""

    concurrency: int
    num_prompts: int
    completed: int
    failed: int
    duration_s: float
    # Output tokens/s of the whole endpoint, and per GPU of the engine (None for a plan without GPUs).
    output_throughput: float
    output_per_gpu: float | None
    total_token_throughput: float | None
    # 1000 / median TPOT: what one user sees (InferenceX's x axis).
    tokens_per_user: float | None
    mean_ttft_ms: float | None
    p99_ttft_ms: float | None
    mean_tpot_ms: float | None
    median_tpot_ms: float | None
    p99_tpot_ms: float | None
    mean_itl_ms: float | None
    p99_itl_ms: float | None
    result_file: str

    @classmethod
    def from_result(cls, data: Mapping[str, Any], *, gpus: int, result_file: str) -> SweepPoint:
        """A point from one `vllm bench serve --save-result` JSON document (field names as vLLM writes them)."""
        missing = [key for key in ("max_concurrency", "completed", "output_throughput") if data.get(key) is None]
        if missing:
            raise GlmDeployError(
                f"benchmark result {result_file} lacks {', '.join(missing)}: not a `vllm bench serve --save-result` "
                "file from a run with --max-concurrency",
                hint="run the sweep again; the benchmark role writes these files",
            )
        output = float(data["output_throughput"])
        median_tpot = _optional_number(data, "median_tpot_ms")
        return cls(
            concurrency=int(data["max_concurrency"]),
            num_prompts=int(data.get("num_prompts") or data["completed"]),
            completed=int(data["completed"]),
            failed=int(data.get("failed") or 0),
            duration_s=float(data.get("duration") or 0.0),
            output_throughput=output,
            output_per_gpu=output / gpus if gpus > 0 else None,
            total_token_throughput=_optional_number(data, "total_token_throughput"),
            tokens_per_user=tokens_per_user(median_tpot),
            mean_ttft_ms=_optional_number(data, "mean_ttft_ms"),
            p99_ttft_ms=_optional_number(data, "p99_ttft_ms"),
            mean_tpot_ms=_optional_number(data, "mean_tpot_ms"),
            median_tpot_ms=median_tpot,
            p99_tpot_ms=_optional_number(data, "p99_tpot_ms"),
            mean_itl_ms=_optional_number(data, "mean_itl_ms"),
            p99_itl_ms=_optional_number(data, "p99_itl_ms"),
            result_file=result_file,
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SweepPoint:
        names = {field.name for field in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in names})


def read_point(path: Path, *, gpus: int) -> SweepPoint:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise GlmDeployError(f"cannot read benchmark result {path}: {error}") from None
    if not isinstance(data, Mapping):
        raise GlmDeployError(f"benchmark result {path} is not a JSON object")
    return SweepPoint.from_result(data, gpus=gpus, result_file=str(path))


def collect_points(results_dir: Path, host: str, stamp: str, *, gpus: int) -> tuple[SweepPoint, ...]:
    """The points of one sweep on `host`: `<results_dir>/<host>/<stamp>-c<N>.json`, by concurrency."""
    folder = results_dir / host
    found: list[tuple[int, Path]] = []
    for path in folder.glob(f"{stamp}-c*.json"):
        match = _POINT_FILE.match(path.name)
        if match and match["stamp"] == stamp:
            found.append((int(match["concurrency"]), path))
    if not found:
        raise GlmDeployError(
            f"no sweep results for host {host} in {folder} (expected {stamp}-c<N>.json)",
            hint="the benchmark playbook fetches them there; see the run's output for what it did",
        )
    return tuple(read_point(path, gpus=gpus) for _, path in sorted(found))


# ----------------------------------------------------------------------------------- what was measured


@dataclass(frozen=True)
class SweepSubject:
    """What a sweep measured: host, model, engine, hardware, the engine's GPUs, the workload and the release."""

    host: str
    model: str
    model_display_name: str
    engine: str
    engine_version: str | None
    hardware: str
    gpus: int
    input_len: int
    output_len: int
    release_id: str
    release: str

    @classmethod
    def from_plan(cls, plan: Plan, *, host: str, release: Release) -> SweepSubject:
        return cls(
            host=host,
            model=plan.model,
            model_display_name=plan.model_display_name,
            engine=plan.engine,
            engine_version=plan.engine_version,
            hardware=plan.hardware,
            # Every GPU the engine spans: throughput per GPU is what a node's price is divided by.
            gpus=plan.gpus_per_node * plan.node_count,
            input_len=int(plan.benchmark["input_len"]),
            output_len=int(plan.benchmark["output_len"]),
            release_id=release.release_id,
            release=release.describe(),
        )

    @property
    def per_unit(self) -> str:
        """What the y axis divides by: a GPU, or the host when the plan has none."""
        return "GPU" if self.gpus > 0 else "host"

    def comparable(self, other: SweepSubject) -> bool:
        """Same host, model, engine, hardware, GPU count and workload: only the release may differ."""
        keys = ("host", "model", "engine", "hardware", "gpus", "input_len", "output_len")
        return all(getattr(self, key) == getattr(other, key) for key in keys)


@dataclass(frozen=True)
class ReferencePoint:
    """The catalog's published result for this model, engine and hardware, at the profile's concurrency."""

    concurrency: int
    output_throughput: float
    output_per_gpu: float | None
    # From the published mean TPOT (sources publish the mean, not the median); None when not published.
    tokens_per_user: float | None
    mean_ttft_ms: float | None
    mean_tpot_ms: float | None
    source: str

    @classmethod
    def from_plan_benchmark(cls, benchmark: Mapping[str, Any], *, gpus: int) -> ReferencePoint | None:
        reference = benchmark.get("reference")
        if not isinstance(reference, Mapping) or reference.get("output_throughput") is None:
            return None
        output = float(reference["output_throughput"])
        mean_tpot = _optional_number(reference, "mean_tpot_ms")
        return cls(
            concurrency=int(benchmark["max_concurrency"]),
            output_throughput=output,
            output_per_gpu=output / gpus if gpus > 0 else None,
            tokens_per_user=tokens_per_user(mean_tpot),
            mean_ttft_ms=_optional_number(reference, "mean_ttft_ms"),
            mean_tpot_ms=mean_tpot,
            source=str(benchmark.get("reference_source") or reference.get("source") or "the catalog"),
        )


@dataclass(frozen=True)
class BaselineSweep:
    """The last good release's sweep on the same host and workload."""

    release_id: str
    release: str
    stamp: str
    points: tuple[SweepPoint, ...]
    report_file: str


@dataclass(frozen=True)
class SweepReport:
    subject: SweepSubject
    stamp: str
    points: tuple[SweepPoint, ...]
    reference: ReferencePoint | None = None
    baseline: BaselineSweep | None = None

    @property
    def name(self) -> str:
        """The report files' name without suffix: sweep-<host>-<stamp>."""
        return f"{REPORT_PREFIX}{self.subject.host}-{self.stamp}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def find_baseline(
    results_dir: Path, subject: SweepSubject, stamp: str, *, good_releases: Collection[str] | None = None
) -> BaselineSweep | None:
    """The newest earlier sweep report in `results_dir` of a comparable subject with another release; with
    `good_releases`, only one whose release is among them (those the history records as served successfully)."""
    best: tuple[str, BaselineSweep] | None = None
    for path in results_dir.glob(f"{REPORT_PREFIX}{subject.host}-*.json"):
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
            other = SweepSubject(**document["subject"])
            other_stamp = str(document["stamp"])
            points = tuple(SweepPoint.from_dict(point) for point in document["points"])
        except (OSError, ValueError, KeyError, TypeError):
            # A report from an older glm-deploy or edited by hand is no baseline; it must not stop this one.
            continue
        if (
            other_stamp >= stamp
            or other.release_id == subject.release_id
            or not subject.comparable(other)
            or (good_releases is not None and other.release_id not in good_releases)
            or not points
        ):
            continue
        if best is None or other_stamp > best[0]:
            best = (
                other_stamp,
                BaselineSweep(
                    release_id=other.release_id,
                    release=other.release,
                    stamp=other_stamp,
                    points=points,
                    report_file=str(path),
                ),
            )
    return best[1] if best else None


def build_report(
    results_dir: Path,
    subject: SweepSubject,
    stamp: str,
    *,
    plan_benchmark: Mapping[str, Any],
    good_releases: Collection[str] | None = None,
) -> SweepReport:
    """Read one host's sweep from `results_dir` and pair it with its baseline and the published reference."""
    return SweepReport(
        subject=subject,
        stamp=stamp,
        points=collect_points(results_dir, subject.host, stamp, gpus=subject.gpus),
        reference=ReferencePoint.from_plan_benchmark(plan_benchmark, gpus=subject.gpus),
        baseline=find_baseline(results_dir, subject, stamp, good_releases=good_releases),
    )
