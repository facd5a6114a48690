"""The glm.deploy.cache_state module run as Ansible runs it (a Python process reading its arguments from a file),
against scratch cache directories."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from tests.equipment.module_process import run_module_file

pytestmark = pytest.mark.playbook

MARKER = ".glm-deploy-warm.json"


def run(tmp_path: Path, check_mode: bool = False, **arguments: Any) -> dict[str, Any]:
    return run_module_file("cache_state", tmp_path, check_mode=check_mode, **arguments)


@pytest.fixture
def caches(tmp_path: Path) -> dict[str, str]:
    deep_gemm = tmp_path / "cache" / "deep_gemm" / "key"
    (deep_gemm / "kernels" / "a").mkdir(parents=True)
    (deep_gemm / "kernels" / "a" / "kernel.cubin").write_bytes(b"x" * 1000)
    (deep_gemm / "kernels" / "kernel.so").write_bytes(b"y" * 24)
    # A link is not followed and not counted: a cache never owns what it points at.
    os.symlink("/etc/hostname", deep_gemm / "kernels" / "link")
    inductor = tmp_path / "cache" / "inductor" / "key"
    inductor.mkdir(parents=True)
    return {
        "deep_gemm": str(deep_gemm),
        "inductor": str(inductor),
        "triton": str(tmp_path / "cache" / "triton" / "key"),  # not created yet
    }


def test_query_measures_and_reports_everything_cold(tmp_path: Path, caches: dict[str, str]) -> None:
    result = run(tmp_path, caches=caches)
    assert result["changed"] is False and result["warm"] is False
    assert result["cold"] == ["deep_gemm", "inductor", "triton"] and result["marked"] == []
    deep_gemm = result["caches"]["deep_gemm"]
    assert (deep_gemm["bytes"], deep_gemm["files"], deep_gemm["exists"], deep_gemm["warm"]) == (1024, 2, True, False)
    assert deep_gemm["since"] is None and deep_gemm["warmed_by"] is None
    assert result["caches"]["triton"]["exists"] is False
    assert not (Path(caches["deep_gemm"]) / MARKER).exists()


def test_mark_writes_a_marker_once_and_keeps_the_first(tmp_path: Path, caches: dict[str, str]) -> None:
    first = run(tmp_path, caches=caches, mark=True, release_id="aaaaaaaaaaaa", warmed_by={"deep_gemm": "warmup"})
    assert first["changed"] is True
    # A directory that does not exist was never filled: it stays cold and gets no marker.
    assert first["marked"] == ["deep_gemm", "inductor"] and first["cold"] == ["triton"]
    marker = json.loads((Path(caches["deep_gemm"]) / MARKER).read_text())
    assert (marker["release_id"], marker["warmed_by"], marker["kind"]) == ("aaaaaaaaaaaa", "warmup", "deep_gemm")
    assert first["caches"]["deep_gemm"]["since"] == marker["since"]
    assert first["caches"]["inductor"]["warmed_by"] == "first_start"
    # The marker itself is not part of the cache's size.
    assert (first["caches"]["deep_gemm"]["bytes"], first["caches"]["deep_gemm"]["files"]) == (1024, 2)

    again = run(tmp_path, caches=caches, mark=True, release_id="bbbbbbbbbbbb")
    assert again["changed"] is False and again["marked"] == []
    assert again["caches"]["deep_gemm"]["release_id"] == "aaaaaaaaaaaa"  # the release that made it warm
    assert again["caches"]["deep_gemm"]["warm"] is True


def test_check_mode_reports_what_it_would_mark_and_writes_nothing(tmp_path: Path, caches: dict[str, str]) -> None:
    result = run(tmp_path, check_mode=True, caches=caches, mark=True, release_id="aaaaaaaaaaaa")
    assert result["changed"] is True and result["marked"] == ["deep_gemm", "inductor"]
    assert result["caches"]["deep_gemm"]["warm"] is True
    assert not (Path(caches["deep_gemm"]) / MARKER).exists()
    assert run(tmp_path, caches=caches)["warm"] is False


def test_relative_paths_and_marker_names_are_refused(tmp_path: Path) -> None:
    result = run(tmp_path, caches={"deep_gemm": "cache/deep_gemm"})
    assert result["failed"] is True and "caches.deep_gemm must be an absolute directory path" in result["msg"]
    result = run(tmp_path, caches={"deep_gemm": str(tmp_path)}, marker_name="../escape.json")
    assert result["failed"] is True and "marker_name" in result["msg"]
