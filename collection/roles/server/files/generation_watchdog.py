# Copyright: glm-deploy developers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Liveness by real generation: restart the engine unit when it stops generating while /health still says 200.

An engine can answer /health with 200 while every generation hangs (vllm#17972, vllm#40863): systemd sees a
running process, the health checks see 200, and users see timeouts. This script, run by the
glm-watchdog-<served>.timer every few seconds (one probe per run; the role installs it), sends the cheapest real
request: a one-token chat completion at temperature 0, with the endpoint's API key. It restarts the engine unit only
when all of these hold:

- the unit is active and has been for longer than --start-grace (an engine loading or warming up is slow, not hung;
  systemd's ActiveEnterTimestampMonotonic is on the same clock as time.monotonic());
- no redeploy holds the host (--pause-file exists while one does: it restarts and verifies the unit itself);
- --failures probes in a row got no answer within --timeout (or a server error) while /health answered 200: a
  probe while /health fails is not counted, since a dead or starting engine is systemd's Restart= business;
- the last restart by this watchdog is more than --cooldown seconds ago, so an engine that hangs again at once is
  restarted once per cool-down and not in a loop.

The API key is read from the file the engine itself reads (the unit's mode-0600 EnvironmentFile, NAME=value, or
SGLang's config file, name: value), so it is never on a command line, in a unit file or in this script's output.
Each run prints one line (the journal keeps it) and tells systemd the result by its exit status:
  0  generation answered, or nothing to judge (unit not active, in its start grace, paused, /health not 200)
  1  a hung probe was counted; fewer than --failures in a row so far
  2  the engine unit was restarted
  3  hung for --failures probes in a row, but within the cool-down of the last restart: not restarted
  4  the probe cannot work as configured (key file, refused key, unknown model, systemctl failed): a person must look
State (the count of hung probes in a row, the last restart) lives in --state-dir, a tmpfs under /run: a reboot
starts afresh, as the engine does.
"""

import argparse
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

OK, HUNG_COUNTED, RESTARTED, COOLING_DOWN, MISCONFIGURED = 0, 1, 2, 3, 4


def say(unit, message):
    print(f"{unit}: {message}", flush=True)


def read_api_key(path, name):
    """The value of `name` in an EnvironmentFile (NAME=value) or a YAML mapping (name: value); never printed."""
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except OSError as error:
        raise ValueError(f"cannot read the API key file {path} ({error.strerror or error})") from None
    for raw in lines:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        for separator in ("=", ":"):
            head, found, value = line.partition(separator)
            if found and head.strip() == name:
                value = value.strip()
                if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
                    value = value[1:-1]
                if value:
                    return value
    raise ValueError(f"the API key file {path} has no {name}=... (or {name}: ...) line")


def unit_state(unit):
    """(ActiveState, seconds since the unit became active or None), from systemctl show."""
    result = subprocess.run(
        ["systemctl", "show", "--property=ActiveState,ActiveEnterTimestampMonotonic", unit],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"systemctl show {unit} exited {result.returncode}: {result.stderr.strip()}")
    properties = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    entered = properties.get("ActiveEnterTimestampMonotonic", "0")
    entered_us = int(entered) if entered.isdigit() else 0
    since = time.monotonic() - entered_us / 1e6 if entered_us else None
    return properties.get("ActiveState", "unknown"), entered_us, since


def request(url, timeout, body=None, key=None):
    """(HTTP status, parsed JSON or None) or (None, reason); the whole exchange, not only each read, ends by
    `timeout`: an engine that accepts the connection and never answers must count as hung."""
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = "Bearer " + key
    data = json.dumps(body).encode() if body is not None else None
    outcome = {}

    def exchange():
        try:
            # The URL is the role's own http://host:port, never a file: or other scheme.
            req = urllib.request.Request(url, data=data, headers=headers)  # noqa: S310
            with urllib.request.urlopen(req, timeout=timeout) as response:  # noqa: S310
                outcome["status"] = response.status
                outcome["body"] = response.read()
        except urllib.error.HTTPError as error:
            outcome["status"] = error.code
        except Exception as error:  # any transport failure is "no answer"; its type and reason say which
            outcome["reason"] = f"{type(error).__name__}: {getattr(error, 'reason', error)}"

    worker = threading.Thread(target=exchange, daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        return None, f"no answer within {timeout:g} s"
    if "status" in outcome:
        return outcome["status"], outcome.get("body")
    return None, outcome.get("reason", "no answer")


class State:
    def __init__(self, path):
        self.path = path
        try:
            with open(path, encoding="utf-8") as handle:
                self.data = json.load(handle)
        except (OSError, ValueError):
            self.data = {}

    def save(self):
        os.makedirs(os.path.dirname(self.path), mode=0o755, exist_ok=True)
        temporary = self.path + ".tmp"
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump(self.data, handle)
        os.replace(temporary, self.path)


def arguments(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--unit", required=True, help="the engine's systemd unit")
    parser.add_argument("--url", required=True, help="the endpoint's base URL, e.g. http://127.0.0.1:8000")
    parser.add_argument("--model", required=True, help="the served model name")
    parser.add_argument("--api-key-file", help="the file holding the API key (none: the endpoint needs no key)")
    parser.add_argument("--api-key-name", default="VLLM_API_KEY", help="the key's name in that file")
    parser.add_argument("--timeout", type=float, default=30, help="seconds a one-token generation may take")
    parser.add_argument("--health-timeout", type=float, default=5, help="seconds /health may take")
    parser.add_argument("--failures", type=int, default=3, help="hung probes in a row before a restart")
    parser.add_argument("--cooldown", type=float, default=900, help="least seconds between two restarts")
    parser.add_argument("--start-grace", type=float, default=300, help="seconds after a start that are not judged")
    parser.add_argument("--state-dir", default="/run/glm-deploy", help="where the count of hung probes is kept")
    parser.add_argument("--pause-file", action="append", default=[], help="do nothing while this file exists")
    options = parser.parse_args(argv)
    for name in ("timeout", "health_timeout", "cooldown", "start_grace"):
        if getattr(options, name) < 0 or (name.endswith("timeout") and getattr(options, name) == 0):
            parser.error(f"--{name.replace('_', '-')} {getattr(options, name)} must be a positive number of seconds")
    if options.failures < 1:
        parser.error(f"--failures {options.failures} must be at least 1")
    return options


def main(argv=None):
    options = arguments(argv)
    unit = options.unit
    for pause in options.pause_file:
        if os.path.exists(pause):
            say(unit, f"paused: {pause} exists (a redeploy holds this host and checks the engine itself)")
            return OK
    state = State(os.path.join(options.state_dir, f"watchdog-{unit}.json"))
    try:
        active, entered_us, since = unit_state(unit)
    except (OSError, RuntimeError, subprocess.TimeoutExpired) as error:
        say(unit, f"cannot read the unit's state: {error}")
        return MISCONFIGURED
    if state.data.get("entered_us") != entered_us:
        # Another start (a deploy, a crash restart, a person): hung probes of the previous run do not carry over.
        state.data.update(entered_us=entered_us, hung=0)
    if active != "active":
        say(unit, f"the unit is {active}: nothing to probe")
        state.save()
        return OK
    if since is not None and since < options.start_grace:
        say(unit, f"active for {since:.0f} s, within the start grace of {options.start_grace:g} s: not judged yet")
        state.save()
        return OK
    key = None
    if options.api_key_file:
        try:
            key = read_api_key(options.api_key_file, options.api_key_name)
        except ValueError as error:
            say(unit, str(error))
            return MISCONFIGURED
    base = options.url.rstrip("/")
    body = {
        "model": options.model,
        "messages": [{"role": "user", "content": "Reply with OK."}],
        "max_tokens": 1,
        "temperature": 0,
        "stream": False,
    }
    started = time.monotonic()
    status, detail = request(base + "/v1/chat/completions", options.timeout, body=body, key=key)
    elapsed = time.monotonic() - started
    if status == 200:
        state.data["hung"] = 0
        state.save()
        say(unit, f"one-token generation answered in {elapsed:.2f} s")
        return OK
    if status in (400, 401, 403, 404, 422):
        # A restart cannot fix a refused key or an unknown model name; saying so beats restarting in a loop.
        refused = "key refused" if status in (401, 403) else "request refused"
        say(
            unit,
            f"the endpoint answered HTTP {status} to the probe ({refused}): check the API key file and the "
            f"served model name {options.model}; not counted",
        )
        state.save()
        return MISCONFIGURED
    failure = f"HTTP {status}" if status is not None else detail
    health, _health_detail = request(base + "/health", options.health_timeout)
    if health != 200:
        answered = "nothing" if health is None else health
        say(
            unit,
            f"generation failed ({failure}) and /health answers {answered}: the engine is not serving, which "
            "systemd and the health checks handle; not counted",
        )
        state.save()
        return OK
    state.data["hung"] = state.data.get("hung", 0) + 1
    hung = state.data["hung"]
    if hung < options.failures:
        say(
            unit,
            f"generation hung ({failure}) while /health answers 200: {hung} of {options.failures} in a row "
            "before a restart",
        )
        state.save()
        return HUNG_COUNTED
    last = state.data.get("last_restart")
    now = time.monotonic()
    if last is not None and 0 <= now - last < options.cooldown:
        say(
            unit,
            f"generation hung ({failure}) {hung} times in a row while /health answers 200, but this watchdog "
            f"restarted the unit {now - last:.0f} s ago (cool-down {options.cooldown:g} s): not restarted",
        )
        state.save()
        return COOLING_DOWN
    say(unit, f"generation hung ({failure}) {hung} times in a row while /health answers 200: restarting {unit}")
    result = subprocess.run(["systemctl", "restart", unit], capture_output=True, text=True, timeout=600, check=False)
    state.data.update(hung=0, last_restart=now)
    state.save()
    if result.returncode != 0:
        say(unit, f"systemctl restart {unit} exited {result.returncode}: {result.stderr.strip()}")
        return MISCONFIGURED
    return RESTARTED


if __name__ == "__main__":
    sys.exit(main())
