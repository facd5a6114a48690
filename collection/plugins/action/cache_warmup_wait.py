"""Wait for an async JIT warm-up job (the server role's precompile step), printing how far the caches have filled.

A cold DeepGEMM compile takes up to half an hour per host, longer than an SSH session should stay open, so the
server role starts the warm-up with `async`/`poll: 0`. This action polls the job with async_status and, between
polls, measures the cache directories the warm-up fills (glm.deploy.cache_state, read-only) and prints one line:
bytes and files so far and the time spent. When the job ends it returns the command's rc and the last lines of its
output (the whole output can be megabytes of compile logs), fails with them when the command failed, and removes
the job's status file.

Arguments: `jid` (required), `caches` (kind -> directory), `label`, `poll_interval` (seconds, default 30),
`timeout` (seconds, default 7200), `output_lines` (default 40).
"""

from __future__ import annotations

import time

from ansible.plugins.action import ActionBase
from ansible.utils.display import Display
from ansible_collections.glm.deploy.plugins.plugin_utils.async_poll import PollDelays, async_status
from ansible_collections.glm.deploy.plugins.plugin_utils.glm_deploy_package import glm_deploy_imports

display = Display()


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("jid", "caches", "label", "poll_interval", "timeout", "output_lines"))

    def _measure(self, caches, task_vars):
        answer = self._execute_module(
            module_name="glm.deploy.cache_state", module_args={"caches": caches}, task_vars=task_vars
        )
        if answer.get("failed"):
            return None
        records = answer.get("caches") or {}
        return sum(int(r.get("bytes") or 0) for r in records.values()), sum(
            int(r.get("files") or 0) for r in records.values()
        )

    def run(self, tmp=None, task_vars=None):
        with glm_deploy_imports("the glm.deploy.cache_warmup_wait action"):
            from glm_deploy.progress import human_bytes, human_duration
        result = super().run(tmp, task_vars)
        args = self._task.args
        jid = args.get("jid")
        if not jid:
            return {**result, "failed": True, "msg": "cache_warmup_wait needs jid (the async job id of the warm-up)"}
        caches = args.get("caches") or {}
        if not isinstance(caches, dict):
            message = f"cache_warmup_wait: caches must map kinds to paths, got {caches!r}"
            return {**result, "failed": True, "msg": message}
        try:
            interval = max(1.0, float(args.get("poll_interval", 30)))
            timeout = float(args.get("timeout", 7200))
            output_lines = max(1, int(args.get("output_lines", 40)))
        except (TypeError, ValueError) as error:
            message = f"cache_warmup_wait: poll_interval, timeout and output_lines must be numbers ({error})"
            return {**result, "failed": True, "msg": message}
        host = task_vars.get("inventory_hostname", "host") if task_vars else "host"
        label = f"{args.get('label') or 'JIT warm-up'} @ {host}"
        started = time.monotonic()
        last_line = None
        delays = PollDelays(interval)
        while True:
            status = async_status(self, jid, "status", task_vars)
            if status.get("finished") or status.get("failed") or status.get("unreachable"):
                break
            elapsed = time.monotonic() - started
            measured = self._measure(caches, task_vars) if caches else None
            if measured is not None:
                line = f"{label}: {human_bytes(measured[0])} in {measured[1]} files so far, {human_duration(elapsed)}"
                if line != last_line:
                    display.display(line)
                    last_line = line
            if elapsed > timeout:
                return {
                    **result,
                    "failed": True,
                    "msg": f"the JIT warm-up (job {jid}) still runs after {timeout:.0f} s; it stops by itself at its "
                    "own time limit. Re-run the play to try again (kernels compiled so far are kept), raise "
                    "server_warmup_timeout_s, or set server_warmup: false to let the first start compile",
                }
            time.sleep(delays.next())
        async_status(self, jid, "cleanup", task_vars)
        tail = [
            *(status.get("stdout") or "").splitlines()[-output_lines:],
            *(status.get("stderr") or "").splitlines()[-output_lines:],
        ]
        elapsed_s = round(time.monotonic() - started)
        for key in ("ansible_job_id", "started", "finished", "results_file", "invocation"):
            status.pop(key, None)
        for key in ("stdout", "stderr", "stdout_lines", "stderr_lines"):
            status.pop(key, None)
        result.update(status)
        result.update(elapsed_s=elapsed_s, output_tail=tail, changed=not status.get("failed"))
        if status.get("failed"):
            cmd = status.get("cmd") or []
            # command's argv comes back as a list, shell's command line as one string
            command = (cmd if isinstance(cmd, str) else " ".join(str(word) for word in cmd)) or "the warm-up command"
            result["msg"] = (
                f"the JIT warm-up failed (rc {status.get('rc')}) after {human_duration(elapsed_s)}: {command}\n"
                + "\n".join(tail)
                + "\nThe server would likely fail the same way at its start; fix the cause, or set "
                "server_warmup: false to let the first start compile instead"
            )
        return result
