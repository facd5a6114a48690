"""The cache_warmup_wait action against real async jobs on localhost (the server role's warm-up wait).

A stand-in warm-up (a shell loop) writes kernel files into a cache folder over about 12 seconds (slow enough that
a loaded machine still polls it more than once); the action polls it with async_status, prints the cache's growth,
and returns the job's rc and the end of its output, or fails with them, or gives up at its timeout.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
from tests.equipment.playbook import run_playbook

pytestmark = pytest.mark.playbook

PLAYBOOK = """
- name: Warm-up wait
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Start a stand-in warm-up that fills the cache folder
      ansible.builtin.shell: |
        for i in 1 2 3 4; do
          head -c 300000 /dev/urandom > "{{ cache }}/kernel-$i.cubin"; echo "compiled kernel $i"; sleep 3
        done
        echo "last line"; exit {{ exit_code }}
      async: 120
      poll: 0
      register: job
      changed_when: false

    - name: Wait for it
      glm.deploy.cache_warmup_wait:
        jid: "{{ job.ansible_job_id }}"
        caches:
          deep_gemm: "{{ cache }}"
        label: JIT warm-up deep_gemm
        poll_interval: 1
        timeout: "{{ wait_timeout }}"
        output_lines: 3
      register: waited
      ignore_errors: true

    - name: Keep the result for the test
      ansible.builtin.copy:
        content: "{{ {'waited': waited, 'job': job} | to_json }}"
        dest: "{{ result_file }}"
        mode: "0644"
"""


def wait_for_warmup(tmp_path: Path, exit_code: int = 0, wait_timeout: int = 60):
    playbook = tmp_path / "wait.yml"
    playbook.write_text(PLAYBOOK)
    cache = tmp_path / "deep_gemm"
    cache.mkdir()
    result_file = tmp_path / "result.json"
    completed = run_playbook(
        playbook,
        home=tmp_path,
        inventory="localhost,",
        variables={
            "cache": str(cache),
            "exit_code": exit_code,
            "wait_timeout": wait_timeout,
            "result_file": str(result_file),
            "ansible_python_interpreter": sys.executable,
        },
        timeout=180,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    kept = json.loads(result_file.read_text())
    return kept["waited"], completed.stdout, Path(kept["job"]["results_file"])


def test_prints_the_caches_growth_and_returns_the_end_of_the_output(tmp_path: Path):
    result, output, status_file = wait_for_warmup(tmp_path)

    assert result.get("failed") is not True, result
    assert result["rc"] == 0
    assert result["changed"] is True
    assert result["output_tail"] == ["compiled kernel 3", "compiled kernel 4", "last line"]
    assert result["elapsed_s"] >= 4
    # One line per poll that saw something new, growing file by file.
    counts = [int(n) for n in re.findall(r"JIT warm-up deep_gemm @ localhost: .+ in (\d+) files so far", output)]
    assert len(counts) >= 2, output
    assert counts == sorted(counts) and counts[-1] > counts[0], counts
    # The job's status file is removed once read.
    assert status_file.parent.is_dir() and not status_file.exists()


def test_a_failed_warm_up_fails_with_its_rc_and_last_lines(tmp_path: Path):
    result, _, _ = wait_for_warmup(tmp_path, exit_code=3)

    assert result["failed"] is True
    assert result["rc"] == 3
    message = result["msg"]
    assert message.startswith("the JIT warm-up failed (rc 3) after ")
    assert 'for i in 1 2 3 4; do' in message  # the command line as given, not spelled out letter by letter
    assert "\ncompiled kernel 3\ncompiled kernel 4\nlast line\n" in message  # the last output_lines lines
    assert "compiled kernel 2\n" not in message
    assert "server_warmup: false" in message


@pytest.mark.parametrize("wait_timeout", [2])
def test_gives_up_at_its_timeout_naming_the_job_and_the_way_out(tmp_path: Path, wait_timeout: int):
    result, _, _ = wait_for_warmup(tmp_path, wait_timeout=wait_timeout)

    assert result["failed"] is True
    assert f"still runs after {wait_timeout} s" in result["msg"]
    assert "server_warmup_timeout_s" in result["msg"]
