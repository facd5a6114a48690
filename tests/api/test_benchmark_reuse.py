"""`glm-deploy benchmark --if-new` (what scripts/sandbox.sh runs): a release already measured is reused, with its
stored figures; a new release, or the command without the flag, measures (issue 14, item 7)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tests.api.conftest import SECRET, Project
from tests.api.test_reported_release import REPORT_TASKS, record_on_host, reporting, served

from glm_deploy.deployment import Deployment

pytestmark = pytest.mark.playbook

__all__ = ["reporting"]  # the fixture, used here by name

BENCHMARK_PLAYBOOK = f"""
- name: Throwaway benchmark that stores a result like glm.deploy.benchmark and reports the host's release
  hosts: glm_servers
  gather_facts: false
  tasks:
    - name: Count the measurements
      ansible.builtin.lineinfile:
        path: "{{{{ marker_dir }}}}/measured.txt"
        line: "{{{{ 99999999 | random }}}}"
        create: true
        mode: "0644"
    - name: Store the result on the controller, named by the run's stamp
      ansible.builtin.copy:
        content: '{{{{ {{"output_throughput": 12.5, "mean_ttft_ms": 150.0, "mean_tpot_ms": 40.25}} | to_json }}}}'
        dest: "{{{{ playbook_dir }}}}/../results/{{{{ inventory_hostname }}}}/{{{{ _stamp }}}}.json"
        mode: "0644"
      delegate_to: localhost
      vars:
        _stamp: "{{{{ now(utc=true, fmt='%Y%m%dT%H%M%SZ') }}}}"
    - name: Report the release this host serves
      ansible.builtin.import_tasks: {REPORT_TASKS}
"""


def benchmark(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "glm_deploy.cli", "benchmark", "-i", *arguments],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "GLM_API_KEY": SECRET},
        timeout=300,
    )


def measurements(project: Project) -> int:
    marker = project.markers / "measured.txt"
    return len(marker.read_text().splitlines()) if marker.exists() else 0


def test_a_measured_release_is_reused_and_a_new_one_measured(
    reporting: tuple[Deployment, Path], project: Project
) -> None:
    deployment, host_root = reporting
    project.playbooks["benchmark"].write_text(BENCHMARK_PLAYBOOK)
    (project.root / "results" / "localhost").mkdir(parents=True)
    first, plan = served(deployment, "e" * 40)
    record_on_host(host_root, first, plan)
    deployment.deploy()
    inventory = str(project.inventory)

    measured = benchmark(inventory, "--if-new")
    assert measured.returncode == 0, measured.stderr
    assert measurements(project) == 1, "nothing measured this release yet"

    reused = benchmark(inventory, "--if-new")
    assert reused.returncode == 0, reused.stderr
    assert measurements(project) == 1, "the release was measured: no second measurement"
    assert f"benchmark reused: release {first.release_id} was measured by run" in reused.stdout
    assert "output tok/s 12.5, TTFT mean ms 150.0, TPOT mean ms 40.2" in reused.stdout
    document = json.loads(benchmark(inventory, "--if-new", "--json").stdout)
    assert document["status"] == "reused" and document["release"]["release_id"] == first.release_id
    assert measurements(project) == 1

    assert benchmark(inventory).returncode == 0
    assert measurements(project) == 2, "without --if-new the benchmark always runs"

    second, _ = served(deployment, "f" * 40)
    record_on_host(host_root, second, plan, previous=first.release_id)
    deployment.deploy()
    assert benchmark(inventory, "--if-new").returncode == 0
    assert measurements(project) == 3, "a new release is measured"


def test_if_new_refuses_a_sweep(reporting: tuple[Deployment, Path], project: Project) -> None:
    refused = benchmark(str(project.inventory), "--if-new", "--sweep", "1,2")

    assert refused.returncode == 2
    assert "--if-new" in refused.stderr
