"""Wait for an async glm.deploy.hf_prefetch job, printing its progress (bytes, rate, ETA) on every poll.

A 705 GB download runs for hours, longer than any SSH session should stay open, so the weights role starts the
module with `async`/`poll: 0`. This action then polls the job with async_status and, between polls, reads the
module's progress file on the target and prints one line (the format of
`glm_deploy.progress.format_line`, which the glm-deploy CLI parses back into a progress bar), plus one line per
wait the Hub asked for (a rate limit) while that wait runs. It returns the
module's own result when the job ends, and removes the job's status file.

Arguments: `jid` (required), `progress_file`, `label`, `poll_interval` (seconds, default 15), `timeout`
(seconds, default 172800).
"""

from __future__ import annotations

import base64
import json
import time

from ansible.plugins.action import ActionBase
from ansible.utils.display import Display
from ansible_collections.glm.deploy.plugins.plugin_utils.async_poll import PollDelays, async_status
from ansible_collections.glm.deploy.plugins.plugin_utils.glm_deploy_package import glm_deploy_imports

display = Display()


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("jid", "progress_file", "label", "poll_interval", "timeout"))

    def _read_progress(self, path, task_vars):
        answer = self._execute_module(
            module_name="ansible.builtin.slurp", module_args={"src": path}, task_vars=task_vars
        )
        if answer.get("failed") or "content" not in answer:
            return None
        try:
            return json.loads(base64.b64decode(answer["content"]))
        except ValueError:
            return None  # caught mid-rewrite: the next poll reads it

    def run(self, tmp=None, task_vars=None):
        with glm_deploy_imports("the glm.deploy.hf_prefetch_wait action"):
            from glm_deploy.progress import Progress, format_line
        result = super().run(tmp, task_vars)
        args = self._task.args
        jid = args.get("jid")
        if not jid:
            return {
                **result,
                "failed": True,
                "msg": "hf_prefetch_wait needs jid (the async job id of hf_prefetch)",
            }
        try:
            interval = max(1.0, float(args.get("poll_interval", 15)))
            timeout = float(args.get("timeout", 172800))
        except (TypeError, ValueError) as error:
            return {
                **result,
                "failed": True,
                "msg": f"hf_prefetch_wait: poll_interval/timeout must be numbers ({error})",
            }
        progress_file = args.get("progress_file")
        host = task_vars.get("inventory_hostname", "host") if task_vars else "host"
        label = f"{args.get('label') or 'weights'} @ {host}"
        deadline = time.monotonic() + timeout
        last_lines = None
        delays = PollDelays(interval)
        while True:
            status = async_status(self, jid, "status", task_vars)
            # A job that ended, or a poll that failed (job file gone, host unreachable), ends the wait.
            if status.get("finished") or status.get("failed") or status.get("unreachable"):
                break
            if progress_file:
                data = self._read_progress(progress_file, task_vars)
                lines = []
                if data and data.get("bytes_total"):
                    lines.append(format_line(label, Progress.from_mapping(data)))
                # Waits the Hub asked for (a rate limit of minutes), shown even before the sizes are known, so a
                # silent stretch of the play says why it is silent.
                if data and isinstance(data.get("waiting"), list):
                    lines += [f"{label}: {str(note)[:300]}" for note in data["waiting"][:8]]
                if lines and lines != last_lines:
                    for line in lines:
                        display.display(line)
                    last_lines = lines
            if time.monotonic() > deadline:
                return {
                    **result,
                    "failed": True,
                    "msg": f"the weights download (job {jid}) still runs after {timeout:.0f}s; it keeps "
                    "running on the host: re-run the play to wait again (finished files are kept) or raise "
                    "weights_async_timeout_s",
                }
            time.sleep(delays.next())
        async_status(self, jid, "cleanup", task_vars)
        bookkeeping = ["ansible_job_id", "started", "finished", "results_file"]
        if not status.get("failed"):
            # Library warnings are noise on success; a failure keeps them (and any traceback).
            bookkeeping += ["stdout", "stderr", "stdout_lines", "stderr_lines"]
        for key in bookkeeping:
            status.pop(key, None)
        status.pop("invocation", None)
        result.update(status)
        return result
