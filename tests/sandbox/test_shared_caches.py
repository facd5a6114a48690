"""Controller caches that two sandboxes fill at once: one fills each, the others wait and reuse it.

CI starts the fleet's sandbox and the container scenario's sandbox together; both generated the shared SSH key at
the same moment and the second `ssh-keygen` stopped at "already exists. Overwrite (y/n)?" (CI run of stop 18).
These tests start several real processes at once against each shared cache and check that exactly one of them
did the work and every one of them got the same, complete result.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.playbook

RACERS = 4


def _race(script: str, tmp_path: Path) -> list[str]:
    """Start RACERS copies of `script` released together by a start file; return their stdouts."""
    go = tmp_path / "go"
    prelude = textwrap.dedent(
        f"""
        import pathlib, time
        while not pathlib.Path({str(go)!r}).exists():
            time.sleep(0.01)
        """
    )
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", prelude + textwrap.dedent(script)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "XDG_CACHE_HOME": str(tmp_path / "xdg")},
        )
        for _ in range(RACERS)
    ]
    go.touch()
    outputs = []
    for process in processes:
        stdout, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr
        outputs.append(stdout)
    return outputs


def test_the_ssh_key_is_generated_once_when_sandboxes_start_together(tmp_path: Path) -> None:
    folder = tmp_path / "ssh"
    outputs = _race(
        f"""
        from glm_deploy.sandbox.image import ensure_ssh_key
        key = ensure_ssh_key(pathlib.Path({str(folder)!r}))
        print(key.public_text())
        """,
        tmp_path,
    )
    assert len(set(outputs)) == 1, outputs
    derived = subprocess.run(
        ["ssh-keygen", "-y", "-f", str(folder / "id_ed25519")], capture_output=True, text=True, check=True
    )
    assert derived.stdout.split()[:2] == outputs[0].split()[:2]  # the private half belongs to the public half
    assert (folder / "id_ed25519").stat().st_mode & 0o777 == 0o600


def test_the_wheelhouse_is_downloaded_once_when_sandboxes_start_together(tmp_path: Path) -> None:
    # `python` is the interpreter the wheelhouse runs `-m pip download` with: this one logs each call, takes a
    # while (as 900 MB does) and leaves one wheel in --dest, so overlapping downloads would show in its log.
    log = tmp_path / "downloads.log"
    interpreter = tmp_path / "python"
    interpreter.write_text(
        textwrap.dedent(
            f"""\
            #!/bin/sh
            echo "start $$" >> {log}
            sleep 1
            dest=""; while [ $# -gt 0 ]; do [ "$1" = --dest ] && dest="$2"; shift; done
            printf 'wheel' > "$dest/six-1.17.0-py2.py3-none-any.whl"
            echo "end $$" >> {log}
            """
        )
    )
    interpreter.chmod(0o755)
    target = tmp_path / "wheelhouse"
    outputs = _race(
        f"""
        import json
        from glm_deploy.sandbox.wheelhouse import ensure_wheelhouse
        got = ensure_wheelhouse("1.17.0", path=pathlib.Path({str(target)!r}), python={str(interpreter)!r},
                                distribution="six")
        print(json.dumps([got.files, got.size_bytes, got.downloaded]))
        """,
        tmp_path,
    )
    results = [json.loads(output) for output in outputs]
    assert log.read_text().count("start") == 1, log.read_text()
    assert sorted(downloaded for _, _, downloaded in results) == [False] * (RACERS - 1) + [True]
    assert {(files, size) for files, size, _ in results} == {(1, len("wheel"))}


def test_exclusive_runs_one_holder_at_a_time_and_says_who_waits(tmp_path: Path) -> None:
    trace = tmp_path / "trace"
    outputs = _race(
        f"""
        import os, sys
        from glm_deploy.sandbox.environment import exclusive
        with exclusive(pathlib.Path({str(tmp_path / "x.lock")!r}), "waiting for the other holder"):
            with open({str(trace)!r}, "a") as out:
                out.write(f"in {{os.getpid()}}\\n")
            time.sleep(0.3)
            with open({str(trace)!r}, "a") as out:
                out.write(f"out {{os.getpid()}}\\n")
        """,
        tmp_path,
    )
    lines = trace.read_text().split()
    pairs = [lines[index : index + 4] for index in range(0, len(lines), 4)]
    assert len(pairs) == RACERS
    for entered, pid, left, same in pairs:  # every "in" is followed by its own "out": no two held it at once
        assert (entered, left, same) == ("in", "out", pid)
    assert outputs == [""] * RACERS  # progress goes to stderr, never stdout
