"""The progress line the weights wait step prints, the CLI's parser for it, and the renderer."""

from __future__ import annotations

import io

import pytest

from glm_deploy.progress import Progress, ProgressRenderer, format_line, human_duration, parse_line


def test_the_line_shows_bytes_rate_and_eta():
    progress = Progress.from_mapping(
        {
            "bytes_done": 3 * 1024**3,
            "bytes_total": 12 * 1024**3,
            "rate_bytes_per_s": 256 * 1024**2,
            "eta_s": 3725,
            "files_done": 2,
            "files_total": 8,
            "phase": "downloading",
        }
    )

    line = format_line("weights zai-org/GLM-5-FP8 @ node-1", progress)

    assert line == (
        "weights zai-org/GLM-5-FP8 @ node-1: 3.00 GiB / 12.00 GiB (25.0%), 256.00 MiB/s, ETA 1h02m, "
        "2/8 files [downloading]"
    )


@pytest.mark.parametrize("eta", [None, 0.0, 59.0, 61.0, 7300.0])
def test_the_cli_reads_back_what_the_play_printed(eta):
    progress = Progress(5_000_000_000, 705_000_000_000, 812_000_000.0, eta, 3, 282, "downloading")

    parsed = parse_line(format_line("weights zai-org/GLM-5-FP8 @ h", progress))

    assert parsed is not None
    label, back = parsed
    assert label == "weights zai-org/GLM-5-FP8 @ h"
    assert abs(back.bytes_done - progress.bytes_done) / progress.bytes_done < 0.01
    assert abs(back.bytes_total - progress.bytes_total) / progress.bytes_total < 0.01
    assert (back.files_done, back.files_total, back.phase) == (3, 282, "downloading")
    if eta is None:
        assert back.eta_s is None
    else:
        assert back.eta_s is not None and abs(back.eta_s - eta) <= 60
    assert parse_line("TASK [glm.deploy.weights : Start downloading] ****") is None


def test_human_duration():
    assert [human_duration(value) for value in (None, 5, 65, 3600 * 5 + 60 * 7)] == [
        "unknown",
        "5s",
        "1m05s",
        "5h07m",
    ]


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_one_redrawn_bar():
    stream = FakeTerminal()
    renderer = ProgressRenderer(stream, width=10)

    renderer.update("weights", Progress(50, 100, 10.0, 5.0))
    renderer.update("weights", Progress(100, 100, 10.0, 0.0, phase="done"))
    renderer.close()

    text = stream.getvalue()
    assert text.count("\r") == 2 and text.endswith("\n")
    assert "[#####-----]  50.0%" in text and "[##########] 100.0%" in text


def test_a_log_gets_plain_lines_without_flooding():
    stream = io.StringIO()
    renderer = ProgressRenderer(stream, plain_interval_s=3600)

    for done in range(0, 100, 10):
        renderer.update("weights", Progress(done, 100, 1.0, 100.0 - done))
    renderer.update("weights", Progress(100, 100, 1.0, 0.0, phase="done"))

    lines = stream.getvalue().splitlines()
    assert len(lines) == 2  # the first, then the last: nothing in between within the interval
    assert "\r" not in stream.getvalue()
    assert lines[-1].endswith("[done]")


def test_feed_draws_progress_lines_and_ignores_the_rest():
    stream = io.StringIO()
    renderer = ProgressRenderer(stream, plain_interval_s=0)
    line = format_line("weights r @ h", Progress(10, 100, 5.0, 18.0, 1, 4))

    assert renderer.feed("ok: [h] => changed=false") is False
    assert renderer.feed(line) is True
    assert stream.getvalue() == line + "\n"
