"""Wait for an engine's health endpoint while showing what its systemd unit is doing.

A start takes a minute on the CPU sandbox and up to an hour on a GPU node (weights load, JIT compiles), so the wait
prints the unit's latest journal line as it goes, stops early when systemd has given up on the unit, and on timeout
fails with the journal's last lines: the person at the terminal sees why without logging in.
"""

from __future__ import annotations

import time

from ansible.plugins.action import ActionBase
from ansible.utils.display import Display
from ansible_collections.glm.deploy.plugins.plugin_utils.async_poll import PollDelays

display = Display()


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("url", "unit", "timeout", "interval", "journal_lines", "status_code"))

    def _probe(self, url, status_code, task_vars):
        # The request runs on the target: the endpoint may listen on 127.0.0.1 or be firewalled from the controller.
        answer = self._execute_module(
            module_name="ansible.builtin.uri",
            module_args={"url": url, "status_code": [status_code], "timeout": 5, "return_content": False},
            task_vars=task_vars,
        )
        return not answer.get("failed") and answer.get("status") == status_code

    def _run(self, argv, task_vars):
        answer = self._execute_module(
            module_name="ansible.builtin.command", module_args={"argv": argv}, task_vars=task_vars
        )
        return answer.get("stdout", "") if answer.get("rc") == 0 else ""

    def _unit_state(self, unit, task_vars):
        text = self._run(["systemctl", "show", "--property=ActiveState,SubState,NRestarts", unit], task_vars)
        return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)

    def _journal(self, unit, lines, task_vars):
        argv = ["journalctl", "--unit", unit, "--lines", str(lines), "--no-pager", "--output", "cat"]
        return self._run(argv, task_vars)

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = self._task.args
        missing = [name for name in ("url", "unit") if not args.get(name)]
        if missing:
            return {**result, "failed": True, "msg": f"wait_healthy needs {', '.join(missing)}"}
        url, unit = str(args["url"]), str(args["unit"])
        try:
            timeout = int(args.get("timeout", 600))
            interval = int(args.get("interval", 5))
            journal_lines = int(args.get("journal_lines", 40))
            status_code = int(args.get("status_code", 200))
        except (TypeError, ValueError) as error:
            message = f"wait_healthy: timeout, interval, journal_lines and status_code must be integers ({error})"
            return {**result, "failed": True, "msg": message}
        host = task_vars.get("inventory_hostname", "?")
        started = time.monotonic()
        last_shown = None
        restarts_before = None
        delays = PollDelays(interval)
        while True:
            elapsed = int(time.monotonic() - started)
            if self._probe(url, status_code, task_vars):
                message = f"{unit} answers {url} after {elapsed} s"
                return {**result, "changed": False, "elapsed_s": elapsed, "msg": message}
            if self._task.check_mode:
                # Nothing was started in check mode, so there is nothing to wait for.
                return {**result, "changed": False, "skipped": True, "msg": f"{url} does not answer yet (check mode)"}
            state = self._unit_state(unit, task_vars)
            restarts = int(state.get("NRestarts") or 0)
            if restarts_before is None:
                restarts_before = restarts
            # Restart=on-failure retries a crash; two crashes within one wait are a broken config, not bad luck.
            crashed_twice = restarts - restarts_before >= 2
            if crashed_twice or (state.get("ActiveState") in ("failed", "inactive") and elapsed >= interval):
                journal = self._journal(unit, journal_lines, task_vars)
                return {
                    **result,
                    "failed": True,
                    "elapsed_s": elapsed,
                    "unit_state": state,
                    "journal": journal.splitlines(),
                    "msg": f"{unit} is {state.get('ActiveState')} ({state.get('SubState')}, "
                    f"{restarts - restarts_before} restarts during this wait) and {url} does not answer; "
                    f"its journal ends:\n{journal}",
                }
            if elapsed >= timeout:
                journal = self._journal(unit, journal_lines, task_vars)
                return {
                    **result,
                    "failed": True,
                    "elapsed_s": elapsed,
                    "unit_state": state,
                    "journal": journal.splitlines(),
                    "msg": f"{url} did not answer within {timeout} s ({unit} is {state.get('ActiveState')}/"
                    f"{state.get('SubState')}); raise server_start_timeout_s if the host is just slow. "
                    f"The journal ends:\n{journal}",
                }
            # journalctl --lines with --since counts from the start of the window: ask for the newest line only.
            latest = self._journal(unit, 1, task_vars).strip()
            if latest and latest != last_shown:
                progress = f"{elapsed}/{timeout} s, {state.get('SubState', '?')}"
                display.display(f"  [{host}] {unit} starting ({progress}): {latest[:200]}")
                last_shown = latest
            time.sleep(delays.next())
