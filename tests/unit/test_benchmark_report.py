"""The benchmark sweep report: vLLM's result files in, a table (Markdown, CSV, JSON) and a picture out.

The inputs are `vllm bench serve --save-result` documents with vLLM's own field names (tests/fixtures/benchmark,
see its README); the plans are rendered from the real catalog, so the GPU count and the published reference are
the ones a user gets.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import struct
import sys
from pathlib import Path

import pytest

from glm_deploy import benchmark_report, benchmark_sweep
from glm_deploy.benchmark_sweep import SweepReport, SweepSubject
from glm_deploy.catalog import load_catalog
from glm_deploy.errors import GlmDeployError, InputError
from glm_deploy.release import Release
from glm_deploy.render import Plan, render_plan

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "benchmark"
CURRENT_STAMP = "20260301T120000Z"
LAST_GOOD_STAMP = "20260220T090000Z"
CPU_STAMP = "20260301T130000Z"
HOST = "gpu-node-1"
CATALOG = load_catalog()


def plan_for(model: str = "glm-5.1-fp8", engine: str = "sglang", hardware: str = "b200") -> Plan:
    return render_plan(CATALOG, model=model, engine=engine, hardware=hardware)


def release(plan: Plan, commit: str) -> Release:
    return Release.from_plan(plan, model_commit=commit * 40)


def results_with(tmp_path: Path, *folders: str, host: str = HOST) -> Path:
    """A controller's results/ folder holding fixture sweeps as the benchmark role leaves them."""
    results = tmp_path / "results"
    (results / host).mkdir(parents=True, exist_ok=True)
    for folder in folders:
        for path in (FIXTURES / folder).glob("*.json"):
            shutil.copy(path, results / host / path.name)
    return results


def fixture(folder: str, name: str) -> dict[str, object]:
    document: dict[str, object] = json.loads((FIXTURES / folder / name).read_text())
    return document


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


# ------------------------------------------------------------------------------------- concurrencies


def test_sweep_list_is_parsed() -> None:
    assert benchmark_sweep.parse_concurrencies("1,2,4,8") == [1, 2, 4, 8]
    assert benchmark_sweep.parse_concurrencies(" 1, 3 ,64") == [1, 3, 64]


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "separated by commas"),
        ("1,,2", "separated by commas"),
        ("0,1", "from 1 to 1024"),
        ("1,2048", "from 1 to 1024"),
        ("1,two", "'two' must be a whole number"),
        ("1.5", "whole number"),
        ("4,2,1", "ascend without repeats, got 4,2,1"),
        ("2,2", "ascend without repeats"),
        (",".join(str(n) for n in range(1, 18)), "at most 16 concurrencies, got 17"),
    ],
)
def test_bad_sweep_lists_are_refused_with_what_would_work(text: str, says: str) -> None:
    with pytest.raises(InputError) as raised:
        benchmark_sweep.parse_concurrencies(text)
    assert says in str(raised.value)
    assert raised.value.hint and "e.g." in raised.value.hint
    assert raised.value.exit_code == 2


def test_descending_list_hint_is_the_same_concurrencies_sorted() -> None:
    with pytest.raises(InputError) as raised:
        benchmark_sweep.check_concurrencies([8, 2, 4, 2])
    assert raised.value.hint == "e.g. 2,4,8"


# ------------------------------------------------------------------------------------------- the math


def test_per_gpu_and_per_user_follow_inferencex() -> None:
    result = fixture("b200-current", f"{CURRENT_STAMP}-c32.json")
    point = benchmark_sweep.SweepPoint.from_result(result, gpus=8, result_file="c32.json")
    assert point.concurrency == 32
    assert point.num_prompts == point.completed == 512
    assert point.output_throughput == pytest.approx(float(str(result["output_throughput"])))
    # InferenceX: output_tput_per_gpu = output_throughput / GPUs; interactivity = 1000 / TPOT (median plotted).
    assert point.output_per_gpu == pytest.approx(point.output_throughput / 8)
    assert point.tokens_per_user == pytest.approx(1000 / float(str(result["median_tpot_ms"])))
    assert point.p99_itl_ms == pytest.approx(float(str(result["p99_itl_ms"])))
    assert point.p99_ttft_ms is not None and point.mean_ttft_ms is not None
    assert point.p99_ttft_ms > point.mean_ttft_ms


def test_a_plan_without_gpus_has_no_per_gpu_figure() -> None:
    cpu = plan_for("glm-tiny", "vllm-cpu", "cpu")
    subject = SweepSubject.from_plan(cpu, host="glm-sandbox-1", release=Release.from_plan(cpu))
    assert subject.gpus == 0
    assert subject.per_unit == "host"
    point = benchmark_sweep.SweepPoint.from_result(
        fixture("cpu", f"{CPU_STAMP}-c4.json"), gpus=subject.gpus, result_file="c4.json"
    )
    assert point.output_per_gpu is None
    assert point.output_throughput > 0


def test_a_zero_tpot_gives_no_per_user_figure() -> None:
    assert benchmark_sweep.tokens_per_user(0.0) is None
    assert benchmark_sweep.tokens_per_user(None) is None
    assert benchmark_sweep.tokens_per_user(20.0) == pytest.approx(50.0)


def test_a_result_without_the_sweep_fields_is_named() -> None:
    with pytest.raises(GlmDeployError) as raised:
        benchmark_sweep.SweepPoint.from_result({"completed": 3}, gpus=8, result_file="results/x/odd.json")
    assert "results/x/odd.json lacks max_concurrency, output_throughput" in str(raised.value)


def test_missing_results_name_the_folder_and_the_expected_names(tmp_path: Path) -> None:
    results = results_with(tmp_path)
    with pytest.raises(GlmDeployError) as raised:
        benchmark_sweep.collect_points(results, HOST, CURRENT_STAMP, gpus=8)
    assert str(results / HOST) in str(raised.value)
    assert f"{CURRENT_STAMP}-c<N>.json" in str(raised.value)


# ------------------------------------------------------------------------------------------- the table


def current_report(tmp_path: Path, **kwargs: object) -> tuple[Path, SweepReport]:
    plan = plan_for()
    results = results_with(tmp_path, "b200-current")
    subject = SweepSubject.from_plan(plan, host=HOST, release=release(plan, "b"))
    report = benchmark_sweep.build_report(results, subject, CURRENT_STAMP, plan_benchmark=plan.benchmark, **kwargs)  # type: ignore[arg-type]
    return results, report


def test_points_come_in_concurrency_order_with_their_figures(tmp_path: Path) -> None:
    _, report = current_report(tmp_path)
    assert [point.concurrency for point in report.points] == [1, 2, 4, 8, 16, 32]
    # The profile's prompts per concurrent request (512 at c=32): 16 per slot.
    assert [point.num_prompts for point in report.points] == [16, 32, 64, 128, 256, 512]
    throughputs = [point.output_throughput for point in report.points]
    per_user = [point.tokens_per_user or 0 for point in report.points]
    assert throughputs == sorted(throughputs), "more concurrency, more output"
    assert per_user == sorted(per_user, reverse=True), "more concurrency, slower per user"


def test_markdown_table_shows_every_column_for_every_point(tmp_path: Path) -> None:
    _, report = current_report(tmp_path)
    text = benchmark_report.markdown(report)
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("| concurrency"))
    for column in ("output tok/s", "output tok/s/GPU", "tok/s/user", "TTFT mean ms", "TTFT p99 ms", "TPOT mean ms",
                   "TPOT p99 ms", "ITL mean ms", "ITL p99 ms"):
        assert f" {column} |" in header
    c32 = report.points[-1]
    row = next(line for line in lines if line.startswith("| 32 |"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[:5] == [
        "32",
        "512",
        f"{c32.output_throughput:,.1f}",
        f"{c32.output_throughput / 8:,.1f}",
        f"{1000 / (c32.median_tpot_ms or 1):,.1f}",
    ]
    assert cells[-1] == "0"
    assert "GLM-5.1" in lines[0] and "sglang" in lines[0] and "b200" in lines[0]
    assert f"release {report.subject.release_id}" in lines[0]
    assert "8192:2048 tokens" in text


def test_csv_has_a_row_per_point_and_the_published_point(tmp_path: Path) -> None:
    _, report = current_report(tmp_path)
    rows = list(csv.DictReader(io.StringIO(benchmark_report.csv_text(report))))
    assert [row["series"] for row in rows] == ["current"] * 6 + ["published"]
    c1 = rows[0]
    assert c1["concurrency"] == "1"
    assert float(c1["output_tok_s_per_gpu"]) == pytest.approx(report.points[0].output_throughput / 8, abs=1e-3)
    assert float(c1["tok_s_per_user"]) == pytest.approx(report.points[0].tokens_per_user or 0, abs=1e-3)
    assert c1["source"].endswith(f"{CURRENT_STAMP}-c1.json")


def test_published_reference_is_the_catalogs_for_this_plan(tmp_path: Path) -> None:
    _, report = current_report(tmp_path)
    reference = report.reference
    assert reference is not None
    # Catalog: B200, GLM-5.1-FP8 SGLang+EAGLE at c=32: 1345 output tok/s, TPOT mean 22.8 ms, on 8 GPUs.
    assert reference.concurrency == 32
    assert reference.output_throughput == 1345
    assert reference.output_per_gpu == pytest.approx(1345 / 8)
    assert reference.tokens_per_user == pytest.approx(1000 / 22.8)
    assert "SGLang+EAGLE" in reference.source
    assert "Published reference at concurrency 32: 1,345.0 output tok/s (168.1 per GPU)" in benchmark_report.markdown(
        report
    )


def test_a_reference_without_tpot_has_no_per_user_figure() -> None:
    # vLLM+MTP on B200 publishes output tok/s only.
    plan = plan_for(engine="vllm")
    reference = benchmark_sweep.ReferencePoint.from_plan_benchmark(plan.benchmark, gpus=8)
    assert reference is not None
    assert reference.output_throughput == 1265
    assert reference.tokens_per_user is None


def test_no_reference_where_the_catalog_publishes_none() -> None:
    plan = plan_for(hardware="h200", model="glm-5.1-fp8", engine="sglang")
    assert benchmark_sweep.ReferencePoint.from_plan_benchmark(plan.benchmark, gpus=8) is None


# --------------------------------------------------------------------------------- the last good release


def write_last_good(results: Path, commit: str = "a") -> SweepReport:
    plan = plan_for()
    for path in (FIXTURES / "b200-last-good").glob("*.json"):
        shutil.copy(path, results / HOST / path.name)
    subject = SweepSubject.from_plan(plan, host=HOST, release=release(plan, commit))
    earlier = benchmark_sweep.build_report(results, subject, LAST_GOOD_STAMP, plan_benchmark=plan.benchmark)
    benchmark_report.write_report(earlier, results)
    return earlier


def test_last_good_sweep_of_another_release_is_drawn_beside(tmp_path: Path) -> None:
    results = results_with(tmp_path, "b200-current")
    earlier = write_last_good(results)
    plan = plan_for()
    subject = SweepSubject.from_plan(plan, host=HOST, release=release(plan, "b"))
    report = benchmark_sweep.build_report(
        results, subject, CURRENT_STAMP, plan_benchmark=plan.benchmark, good_releases={earlier.subject.release_id}
    )
    assert report.baseline is not None
    assert report.baseline.release_id == earlier.subject.release_id != subject.release_id
    assert report.baseline.stamp == LAST_GOOD_STAMP
    assert [point.concurrency for point in report.baseline.points] == [1, 2, 4, 8, 16, 32]
    # The fixtures' earlier release was faster: the regression is what the picture shows.
    assert report.baseline.points[-1].output_throughput > report.points[-1].output_throughput
    rows = list(csv.DictReader(io.StringIO(benchmark_report.csv_text(report))))
    assert [row["series"] for row in rows].count("last_good") == 6
    assert f"Last good release {earlier.subject.release_id}" in benchmark_report.markdown(report)


def test_baseline_must_be_a_good_release_of_the_same_workload_and_earlier(tmp_path: Path) -> None:
    results = results_with(tmp_path, "b200-current")
    earlier = write_last_good(results)
    plan = plan_for()
    subject = SweepSubject.from_plan(plan, host=HOST, release=release(plan, "b"))
    find = benchmark_sweep.find_baseline
    assert find(results, subject, CURRENT_STAMP, good_releases={earlier.subject.release_id}) is not None
    # Not among the releases the history records as served successfully.
    assert find(results, subject, CURRENT_STAMP, good_releases={"someotherid0"}) is None
    # The same release is no baseline of itself.
    same = SweepSubject.from_plan(plan, host=HOST, release=release(plan, "a"))
    assert find(results, same, CURRENT_STAMP) is None
    # A later sweep is not "last".
    assert find(results, subject, "20260101T000000Z") is None
    # Another host, or another workload, is not comparable.
    other_host = SweepSubject.from_plan(plan, host="gpu-node-2", release=release(plan, "b"))
    assert find(results, other_host, CURRENT_STAMP) is None
    h100 = plan_for(hardware="h100", model="glm-5.1-fp8", engine="sglang")
    other_hardware = SweepSubject.from_plan(h100, host=HOST, release=release(h100, "b"))
    assert find(results, other_hardware, CURRENT_STAMP) is None


def test_an_unreadable_earlier_report_is_skipped(tmp_path: Path) -> None:
    results = results_with(tmp_path, "b200-current")
    (results / f"sweep-{HOST}-20260101T000000Z.json").write_text("{not json")
    plan = plan_for()
    subject = SweepSubject.from_plan(plan, host=HOST, release=release(plan, "b"))
    assert benchmark_sweep.find_baseline(results, subject, CURRENT_STAMP) is None


# --------------------------------------------------------------------------------------------- the files


def test_report_files_and_a_readable_picture(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    results = results_with(tmp_path, "b200-current")
    earlier = write_last_good(results)
    plan = plan_for()
    subject = SweepSubject.from_plan(plan, host=HOST, release=release(plan, "b"))
    report = benchmark_sweep.build_report(
        results, subject, CURRENT_STAMP, plan_benchmark=plan.benchmark, good_releases={earlier.subject.release_id}
    )
    written = benchmark_report.write_report(report, results)
    name = f"sweep-{HOST}-{CURRENT_STAMP}"
    assert [path.name for path in written.files()] == [f"{name}.{suffix}" for suffix in ("md", "csv", "json", "png",
                                                                                           "svg")]
    assert written.plot_note is None
    assert written.png is not None and written.svg is not None
    # 10 x 6.5 inches at 150 dpi; a picture with three series, labels and a legend is well over 40 kB.
    assert png_size(written.png) == (1500, 975)
    assert written.png.stat().st_size > 40_000
    svg = written.svg.read_text()
    for label in ("c=1", "c=32", "last good release", "published reference", "tok/s per user", "output tok/s per GPU"):
        assert label in svg, f"{label!r} missing from the picture"
    document = json.loads(written.json.read_text())
    assert document["subject"]["release_id"] == subject.release_id
    assert document["baseline"]["release_id"] == earlier.subject.release_id
    assert len(document["points"]) == 6


def test_cpu_picture_says_per_host(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    cpu = plan_for("glm-tiny", "vllm-cpu", "cpu")
    results = results_with(tmp_path, "cpu", host="glm-sandbox-1")
    subject = SweepSubject.from_plan(cpu, host="glm-sandbox-1", release=Release.from_plan(cpu))
    report = benchmark_sweep.build_report(results, subject, CPU_STAMP, plan_benchmark=cpu.benchmark)
    written = benchmark_report.write_report(report, results)
    assert written.svg is not None
    svg = written.svg.read_text()
    assert "output tok/s per host (CPU plan: no GPUs)" in svg
    assert "no published reference for glm-tiny" in svg
    assert "no earlier sweep of another good release" in svg
    text = written.markdown.read_text()
    assert "this plan has none, so the picture plots per host" in text
    assert "No published reference for glm-tiny" in text


def test_without_matplotlib_the_table_is_written_and_the_note_says_how(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # None in sys.modules makes `import matplotlib` raise ImportError, as on a machine without the extra.
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    _, report = current_report(tmp_path)
    written = benchmark_report.write_report(report, tmp_path / "results")
    assert written.png is None and written.svg is None
    assert written.plot_note is not None
    assert "pip install 'glm-deploy[plot]'" in written.plot_note
    assert written.markdown.is_file() and written.csv.is_file() and written.json.is_file()
    assert not list((tmp_path / "results").glob("*.png"))
