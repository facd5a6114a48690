"""A benchmark sweep as infra engineers read it: a table and a throughput/interactivity picture.

`glm-deploy benchmark --sweep 1,2,4,8` runs the hardware's benchmark profile once per concurrency (the benchmark
role, `benchmark_concurrencies`); each run leaves vLLM's result JSON in `results/<host>/<stamp>-c<N>.json`. This
module reads them and writes, per host, `results/sweep-<host>-<stamp>.{md,csv,json}` and, when matplotlib is
installed (`pip install 'glm-deploy[plot]'`), `.png` and `.svg`.

The picture has InferenceX's axes: output tokens/s per GPU against tokens/s per user ("interactivity"). Both are
computed as InferenceX's `utils/process_result.py` does (SemiAnalysisAI/InferenceX): throughput per GPU is the
result's `output_throughput` divided by the engine's GPU count (`output_tput_per_gpu`; its dashboard's other
series, `tput_per_gpu`, divides input plus output tokens), and interactivity is `1000 / TPOT in ms`, plotted from
the median TPOT (`median_intvty` in its `utils/plot_perf.py`). A plan without GPUs (the CPU sandbox) has no per-GPU
figure: its table leaves the column empty and its picture plots output tokens/s per host, and says so.

Beside the current release the picture draws the last good release's sweep on the same host (an earlier sweep
report of the same model, engine, hardware and workload whose release the history records as served
successfully) and the catalog's published reference point, which was measured at the profile's concurrency.

Everything here is pure apart from reading result files and writing the report files; the `Deployment` API calls
it after the benchmark playbook has brought the results home.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import itertools
import json
import math
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from glm_deploy.errors import GlmDeployError, InputError
from glm_deploy.release import Release
from glm_deploy.render import Plan

PLOT_EXTRA_HINT = "pip install 'glm-deploy[plot]'"

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


# ------------------------------------------------------------------------------------------------ tables


def _figure(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


TABLE_HEADER = (
    "concurrency",
    "prompts",
    "output tok/s",
    "output tok/s/GPU",
    "tok/s/user",
    "TTFT mean ms",
    "TTFT p99 ms",
    "TPOT mean ms",
    "TPOT p99 ms",
    "ITL mean ms",
    "ITL p99 ms",
    "failed",
)


def _row(point: SweepPoint) -> list[str]:
    return [
        str(point.concurrency),
        str(point.num_prompts),
        _figure(point.output_throughput),
        _figure(point.output_per_gpu),
        _figure(point.tokens_per_user),
        _figure(point.mean_ttft_ms),
        _figure(point.p99_ttft_ms),
        _figure(point.mean_tpot_ms),
        _figure(point.p99_tpot_ms),
        _figure(point.mean_itl_ms),
        _figure(point.p99_itl_ms),
        str(point.failed),
    ]


def _markdown_rows(rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(TABLE_HEADER) + " |", "|" + "|".join("---:" for _ in TABLE_HEADER) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def title(report: SweepReport) -> str:
    subject = report.subject
    engine = f"{subject.engine} {subject.engine_version}" if subject.engine_version else subject.engine
    return f"{subject.model_display_name} · {engine} · {subject.hardware} · release {subject.release_id}"


def markdown(report: SweepReport) -> str:
    """The report as Markdown: what was measured, the table, the baseline's table, the reference, definitions."""
    subject = report.subject
    gpus = f"{subject.gpus} GPUs" if subject.gpus else "no GPUs"
    lines = [
        f"# Benchmark sweep: {title(report)}",
        "",
        f"Host {subject.host} ({gpus}), {report.stamp}; release {subject.release_id}: {subject.release}.",
        f"Workload: random dataset, chat endpoint, {subject.input_len}:{subject.output_len} tokens in:out "
        "(the catalog's benchmark profile, once per concurrency).",
        "",
        *_markdown_rows([_row(point) for point in report.points]),
    ]
    if report.baseline is not None:
        lines += [
            "",
            f"Last good release {report.baseline.release_id} (sweep {report.baseline.stamp}): "
            f"{report.baseline.release}",
            "",
            *_markdown_rows([_row(point) for point in report.baseline.points]),
        ]
    else:
        lines += ["", "No earlier sweep of another good release with this workload on this host: nothing to compare."]
    if report.reference is not None:
        reference = report.reference
        lines += [
            "",
            f"Published reference at concurrency {reference.concurrency}: {_figure(reference.output_throughput)} "
            f"output tok/s ({_figure(reference.output_per_gpu)} per GPU), TTFT mean {_figure(reference.mean_ttft_ms)} "
            f"ms, TPOT mean {_figure(reference.mean_tpot_ms)} ms. Source: {reference.source}.",
        ]
    else:
        lines += ["", f"No published reference for {subject.model} on {subject.engine} / {subject.hardware}."]
    lines += [
        "",
        "tok/s/user = 1000 / median TPOT (InferenceX's interactivity); output tok/s/GPU = output tok/s / the engine's "
        + (f"{subject.gpus} GPUs." if subject.gpus else "GPUs: this plan has none, so the picture plots per host."),
    ]
    return "\n".join(lines) + "\n"


CSV_COLUMNS = (
    "series",
    "release_id",
    "stamp",
    "concurrency",
    "num_prompts",
    "completed",
    "failed",
    "output_tok_s",
    "output_tok_s_per_gpu",
    "tok_s_per_user",
    "ttft_mean_ms",
    "ttft_p99_ms",
    "tpot_mean_ms",
    "tpot_median_ms",
    "tpot_p99_ms",
    "itl_mean_ms",
    "itl_p99_ms",
    "source",
)


def csv_text(report: SweepReport) -> str:
    """One row per point: series `current`, `last_good` and `published` (empty cells where unknown)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)

    def cell(value: float | None) -> str:
        return "" if value is None else f"{value:.3f}"

    def point_row(series: str, release_id: str, stamp: str, point: SweepPoint) -> list[str]:
        return [
            series,
            release_id,
            stamp,
            str(point.concurrency),
            str(point.num_prompts),
            str(point.completed),
            str(point.failed),
            cell(point.output_throughput),
            cell(point.output_per_gpu),
            cell(point.tokens_per_user),
            cell(point.mean_ttft_ms),
            cell(point.p99_ttft_ms),
            cell(point.mean_tpot_ms),
            cell(point.median_tpot_ms),
            cell(point.p99_tpot_ms),
            cell(point.mean_itl_ms),
            cell(point.p99_itl_ms),
            point.result_file,
        ]

    for point in report.points:
        writer.writerow(point_row("current", report.subject.release_id, report.stamp, point))
    if report.baseline is not None:
        for point in report.baseline.points:
            writer.writerow(point_row("last_good", report.baseline.release_id, report.baseline.stamp, point))
    if report.reference is not None:
        reference = report.reference
        writer.writerow(
            [
                "published",
                "",
                "",
                str(reference.concurrency),
                "",
                "",
                "",
                cell(reference.output_throughput),
                cell(reference.output_per_gpu),
                cell(reference.tokens_per_user),
                cell(reference.mean_ttft_ms),
                "",
                cell(reference.mean_tpot_ms),
                "",
                "",
                "",
                "",
                reference.source,
            ]
        )
    return buffer.getvalue()


# ----------------------------------------------------------------------------------------------- picture


def _y(point_per_gpu: float | None, output: float) -> float:
    """The y value: per GPU, or the endpoint's whole output for a plan without GPUs (one engine per host)."""
    return point_per_gpu if point_per_gpu is not None else output


def plot(report: SweepReport, png: Path, svg: Path) -> None:
    """Draw the picture into `png` and `svg`. Raises ImportError when matplotlib is not installed."""
    import matplotlib  # noqa: PLC0415 - optional extra: the table is written without it

    matplotlib.use("Agg")
    from matplotlib.figure import Figure  # noqa: PLC0415

    subject = report.subject
    figure = Figure(figsize=(10, 6.5), dpi=150, layout="constrained")
    axes = figure.add_subplot()

    def series(points: Sequence[SweepPoint]) -> tuple[list[float], list[float], list[int]]:
        drawn = [point for point in points if point.tokens_per_user is not None]
        return (
            [point.tokens_per_user or 0.0 for point in drawn],
            [_y(point.output_per_gpu, point.output_throughput) for point in drawn],
            [point.concurrency for point in drawn],
        )

    if report.baseline is not None:
        xs, ys, labels = series(report.baseline.points)
        axes.plot(
            xs, ys, linestyle="--", marker="s", color="0.55", markersize=6,
            label=f"last good release {report.baseline.release_id} ({report.baseline.stamp})",
        )
        for x, y, concurrency in zip(xs, ys, labels, strict=True):
            axes.annotate(f"c={concurrency}", (x, y), textcoords="offset points", xytext=(6, -12), fontsize=8,
                          color="0.4")
    xs, ys, labels = series(report.points)
    axes.plot(
        xs, ys, linestyle="-", marker="o", color="tab:blue", markersize=7, linewidth=2,
        label=f"this release {subject.release_id} ({report.stamp})",
    )
    for x, y, concurrency in zip(xs, ys, labels, strict=True):
        axes.annotate(f"c={concurrency}", (x, y), textcoords="offset points", xytext=(6, 6), fontsize=9,
                      color="tab:blue", fontweight="bold")
    reference = report.reference
    if reference is not None:
        reference_y = _y(reference.output_per_gpu, reference.output_throughput)
        if reference.tokens_per_user is not None:
            axes.plot(
                [reference.tokens_per_user], [reference_y], linestyle="none", marker="*", markersize=16,
                color="tab:red", label=f"published reference, c={reference.concurrency} (x from mean TPOT)",
            )
            axes.annotate(f"c={reference.concurrency}", (reference.tokens_per_user, reference_y),
                          textcoords="offset points", xytext=(8, 4), fontsize=9, color="tab:red")
        else:
            axes.axhline(
                reference_y, linestyle=":", color="tab:red", linewidth=1.5,
                label=f"published reference, c={reference.concurrency} (tok/s per user not published)",
            )
    # Say what is missing rather than leave a reader looking for it.
    if report.baseline is None:
        axes.plot([], [], " ", label="no earlier sweep of another good release")
    if reference is None:
        missing = f"no published reference for {subject.model} / {subject.engine} / {subject.hardware}"
        axes.plot([], [], " ", label=missing)
    axes.set_xlabel("tok/s per user (1000 / median TPOT)")
    axes.set_ylabel(
        f"output tok/s per GPU ({subject.gpus} GPUs)" if subject.gpus
        else "output tok/s per host (CPU plan: no GPUs)"
    )
    # From zero, as InferenceX draws them, with room on the right and top for the "c=N" labels and the legend.
    drawn_x, drawn_y = axes.dataLim.x1, axes.dataLim.y1
    axes.set_xlim(0, (drawn_x if math.isfinite(drawn_x) and drawn_x > 0 else 1.0) * 1.15)
    axes.set_ylim(0, (drawn_y if math.isfinite(drawn_y) and drawn_y > 0 else 1.0) * 1.2)
    axes.grid(True, alpha=0.35)
    axes.legend(loc="best", fontsize=9)
    axes.set_title(
        f"{title(report)}\nhost {subject.host}, {subject.input_len}:{subject.output_len} tokens, random dataset",
        fontsize=11,
    )
    png.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(png, format="png")
    figure.savefig(svg, format="svg")


# --------------------------------------------------------------------------------------------- the files


@dataclass(frozen=True)
class WrittenReport:
    """A report and the files it was written to; `png`/`svg` are None without matplotlib (`plot_note` says how
    to get them)."""

    report: SweepReport
    markdown: Path
    csv: Path
    json: Path
    png: Path | None = None
    svg: Path | None = None
    plot_note: str | None = None

    def files(self) -> list[Path]:
        return [path for path in (self.markdown, self.csv, self.json, self.png, self.svg) if path is not None]

    def to_dict(self) -> dict[str, Any]:
        return {
            "host": self.report.subject.host,
            "stamp": self.report.stamp,
            "release_id": self.report.subject.release_id,
            "baseline_release_id": self.report.baseline.release_id if self.report.baseline else None,
            "files": [str(path) for path in self.files()],
            "plot_note": self.plot_note,
            "points": [dataclasses.asdict(point) for point in self.report.points],
        }


def write_report(report: SweepReport, results_dir: Path) -> WrittenReport:
    """Write `results_dir/sweep-<host>-<stamp>.{md,csv,json}` and, with matplotlib, `.png` and `.svg`."""
    results_dir.mkdir(parents=True, exist_ok=True)
    base = results_dir / report.name
    paths = {suffix: base.with_name(f"{base.name}.{suffix}") for suffix in ("md", "csv", "json", "png", "svg")}
    paths["md"].write_text(markdown(report), encoding="utf-8")
    paths["csv"].write_text(csv_text(report), encoding="utf-8")
    paths["json"].write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
    try:
        plot(report, paths["png"], paths["svg"])
    except ImportError:
        return WrittenReport(
            report=report,
            markdown=paths["md"],
            csv=paths["csv"],
            json=paths["json"],
            plot_note=f"no picture: matplotlib is not installed; {PLOT_EXTRA_HINT} draws it next time",
        )
    return WrittenReport(
        report=report, markdown=paths["md"], csv=paths["csv"], json=paths["json"], png=paths["png"], svg=paths["svg"]
    )
