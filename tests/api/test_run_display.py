"""The CLI's progress display: tasks as they start, failures at once, the download's bytes/rate/ETA."""

from __future__ import annotations

import io

from glm_deploy.commands.deployment import RunDisplay
from glm_deploy.progress import Progress, format_line


def test_display_shows_tasks_failures_and_download_progress() -> None:
    stream = io.StringIO()
    display = RunDisplay(stream)
    display.handle({"event": "playbook_on_task_start", "event_data": {"task": "Download the weights"}})
    # What the weights role's wait step prints on each poll, as ansible-runner hands it over (verbose event).
    line = format_line(
        "weights @ gpu-1",
        Progress(bytes_done=3 * 2**30, bytes_total=12 * 2**30, rate_bytes_per_s=200 * 2**20, eta_s=46.0),
    )
    display.handle({"event": "verbose", "stdout": line})
    display.handle(
        {
            "event": "runner_on_failed",
            "event_data": {
                "host": "gpu-1",
                "task": "Wait for health",
                "res": {"msg": "timed out after 900 s"},
            },
        }
    )
    display.close()
    text = stream.getvalue()
    assert "Download the weights" in text
    assert "weights @ gpu-1: 3.00 GiB / 12.00 GiB (25.0%), 200.00 MiB/s, ETA 46s" in text
    assert "FAILED gpu-1: timed out after 900 s" in text


def test_heartbeat_names_the_step_that_runs_quietly() -> None:
    stream = io.StringIO()
    display = RunDisplay(stream)
    task = "Wait for the endpoint's health"
    display.handle({"event": "playbook_on_task_start", "event_data": {"task": task}})
    display.heartbeat()
    assert "still in" not in stream.getvalue(), "a heartbeat right after output is noise"
    display.last_output -= 31
    display.task_started -= 95
    display.heartbeat()
    assert 'still in "Wait for the endpoint\'s health" (1m35s)' in stream.getvalue()
