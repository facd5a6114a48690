"""A benchmark sweep as infra engineers read it: a table and a throughput/interactivity picture.

`glm-deploy benchmark --sweep 1,2,4,8` runs the hardware's benchmark profile once per concurrency (the benchmark
role, `benchmark_concurrencies`); each run leaves vLLM's result JSON in `results/<host>/<stamp>-c<N>.json`. This
module reads them and writes, per host, `results/sweep-<host>-<stamp>.{md,csv,json}` and, when matplotlib is
installed (`pip install 'glm-deploy[plot]'`), `.png` and `.svg`. Reading the sweep (its points, the baseline, the
reference) is glm_deploy.benchmark_sweep; this module writes it.

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
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from glm_deploy.benchmark_sweep import SweepPoint, SweepReport

PLOT_EXTRA_HINT = "pip install 'glm-deploy[plot]'"


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
