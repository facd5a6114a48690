#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: glm-deploy developers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The quality gate: does the served model still answer correctly, and does speculative decoding still accept?"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: quality_gate
short_description: Gate a glm-deploy release on the model's accuracy and its speculative-decoding acceptance
description:
  - Sends every question of a fixed question set through the served chat endpoint (greedy, thinking off, the
    engine's own configuration, speculative decoding included) and scores the answers exactly (the last number
    of the answer against the reference, as SGLang's few-shot GSM8K script does).
  - Fails when the score is below O(floor), or when it fell more than O(max_drop_points) points below the last
    release on this host that passed the same set (read from C(ROOT/releases/*/quality.json)).
  - With O(speculative), reads the engine's own metrics before and after the questions and fails when the
    acceptance over those prompts is below the floor, or when the plan enables speculative decoding and the
    engine reported none.
  - Records the result in C(ROOT/releases/CURRENT/quality.json) for the release serving now, so that the next
    release is compared with it. Supports check mode (the questions are asked, nothing is recorded).
version_added: "0.1.0"
options:
  base_url:
    description: The endpoint's base URL as the host reaches it, e.g. V(http://127.0.0.1:8000).
    type: str
    required: true
  api_key:
    description: The endpoint's API key (sent as a bearer token; never returned or logged).
    type: str
    required: true
  model:
    description: The served model name.
    type: str
    required: true
  question_set:
    description:
      - The question set, as its JSON text (the verify role reads it from its C(files/quality/) on the controller).
      - An object with C(name), C(source), C(format) (V(few_shot_qa) or V(chat)), C(max_tokens), C(stop),
        C(shots) and C(questions) (each C(question) and C(answer)).
    type: str
    required: true
  floor:
    description: The lowest score (0-1) that passes.
    type: float
    required: true
  max_drop_points:
    description: The most the score may fall, in points (1 point = 0.01), below the last good release's score.
    type: float
  floor_source:
    description: Where the floor comes from (kept in the result and the record).
    type: str
  concurrency:
    description: Questions in flight at once.
    type: int
    default: 8
  request_timeout_s:
    description: Seconds one question may take.
    type: float
    default: 120
  root:
    description: The state root of glm-deploy on the host (releases live under C(ROOT/releases)).
    type: path
    default: /var/lib/glm-deploy
  speculative:
    description:
      - The plan's speculative decoding, when it has it. C(engine) (V(vllm) or V(sglang)), C(method) (named in
        messages) and C(floor) (C(min_acceptance_length), optional C(min_acceptance_rate), C(source)).
    type: dict
author:
  - glm-deploy developers (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Gate on accuracy
  glm.deploy.quality_gate:
    base_url: http://127.0.0.1:8000
    api_key: "{{ glm_api_key }}"
    model: glm-tiny
    question_set: "{{ lookup('ansible.builtin.file', 'quality/sandbox-addition-v1.json') }}"
    floor: 0.9
    max_drop_points: 5
"""

RETURN = r"""
passed:
  description: Whether every check of the gate passed.
  returned: always
  type: bool
release_id:
  description: The release serving now (from C(ROOT/releases/state.json)), or null.
  returned: always
  type: str
accuracy:
  description:
    - The scored set - C(set), C(score), C(correct), C(total), C(errors), C(wrong) (up to 5 wrong answers),
      C(seconds), C(floor), C(max_drop_points), C(baseline) (C(release_id), C(score)) or null, C(drop_points),
      C(passed), C(message).
  returned: always
  type: dict
speculative:
  description: The acceptance reading and decision (C(status), C(message), C(reading)), or null without O(speculative).
  returned: always
  type: dict
message:
  description: One line per check.
  returned: always
  type: str
"""

import json  # noqa: E402
import os  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible.module_utils.urls import open_url  # noqa: E402
from ansible_collections.glm.deploy.plugins.module_utils.quality import (  # noqa: E402
    QuestionSetError,
    decide,
    load_question_set,
    run_question_set,
)
from ansible_collections.glm.deploy.plugins.module_utils.spec_decode import (  # noqa: E402
    acceptance,
)
from ansible_collections.glm.deploy.plugins.module_utils.spec_decode import (  # noqa: E402
    decide as decide_acceptance,
)


def _read_json(path):
    try:
        with open(path) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def current_release(root):
    state = _read_json(os.path.join(root, "releases", "state.json")) or {}
    return state.get("current")


def last_good(root, current, set_name):
    """The newest release other than `current` whose recorded gate on `set_name` passed."""
    folder = os.path.join(root, "releases")
    best = None
    try:
        names = os.listdir(folder)
    except OSError:
        return None
    for name in names:
        if name == current:
            continue
        record = _read_json(os.path.join(folder, name, "quality.json"))
        if not isinstance(record, dict):
            continue
        accuracy = record.get("accuracy") or {}
        if accuracy.get("set") != set_name or not accuracy.get("passed"):
            continue
        if best is None or record.get("at", 0) > best["at"]:
            best = {"release_id": name, "score": accuracy.get("score"), "at": record.get("at", 0)}
    return best


def _record(root, release_id, document):
    folder = os.path.join(root, "releases", release_id)
    if not os.path.isdir(folder):
        return False
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=".quality.")
    with os.fdopen(handle, "w") as out:
        json.dump(document, out, indent=2, sort_keys=True)
        out.write("\n")
    os.chmod(temporary, 0o644)
    os.rename(temporary, os.path.join(folder, "quality.json"))
    return True


def _get_text(url, api_key, timeout):
    with open_url(url, headers={"Authorization": "Bearer %s" % api_key}, timeout=timeout) as answer:
        return answer.read().decode("utf-8", "replace")


def _scrape(base_url, api_key, engine, timeout):
    """The engine's metrics text (and SGLang's /server_info), or (None, None) when unreachable."""
    base = base_url.rstrip("/")
    try:
        metrics = _get_text(base + "/metrics", api_key, timeout)
    except (OSError, ValueError):
        metrics = None
    server_info = None
    if engine == "sglang":
        try:
            server_info = _get_text(base + "/server_info", api_key, timeout)
        except (OSError, ValueError):
            server_info = None
    return metrics, server_info


def main():
    module = AnsibleModule(
        argument_spec=dict(
            base_url=dict(type="str", required=True),
            api_key=dict(type="str", required=True, no_log=True),
            model=dict(type="str", required=True),
            question_set=dict(type="str", required=True),
            floor=dict(type="float", required=True),
            max_drop_points=dict(type="float"),
            floor_source=dict(type="str"),
            concurrency=dict(type="int", default=8),
            request_timeout_s=dict(type="float", default=120),
            root=dict(type="path", default="/var/lib/glm-deploy"),
            speculative=dict(type="dict"),
        ),
        supports_check_mode=True,
    )
    params = module.params
    if not 0.0 <= params["floor"] <= 1.0:
        module.fail_json(msg="floor must be a score between 0 and 1, got %s" % params["floor"])
    if params["max_drop_points"] is not None and params["max_drop_points"] < 0:
        module.fail_json(msg="max_drop_points must be 0 or more, got %s" % params["max_drop_points"])
    if not 1 <= params["concurrency"] <= 256:
        module.fail_json(msg="concurrency must be between 1 and 256, got %s" % params["concurrency"])
    try:
        question_set = load_question_set(params["question_set"])
    except QuestionSetError as error:
        module.fail_json(msg="question set: %s" % error)

    release_id = current_release(params["root"])
    baseline = last_good(params["root"], release_id, question_set["name"])
    speculative = params["speculative"]
    engine = (speculative or {}).get("engine")
    before = _scrape(params["base_url"], params["api_key"], engine, 10) if speculative else (None, None)

    result = run_question_set(
        question_set,
        params["base_url"],
        params["model"],
        params["api_key"],
        concurrency=params["concurrency"],
        request_timeout=params["request_timeout_s"],
    )
    decision = decide(result, params["floor"], params["max_drop_points"], baseline)
    accuracy = dict(
        result,
        floor=params["floor"],
        floor_source=params["floor_source"],
        max_drop_points=params["max_drop_points"],
        baseline=baseline,
    )
    accuracy.update(decision)

    speculative_result = None
    if speculative:
        after = _scrape(params["base_url"], params["api_key"], engine, 10)
        if after[0] is None and after[1] is None:
            speculative_result = {
                "ok": False,
                "status": "failed",
                "message": "the plan enables %s but %s/metrics did not answer"
                % (speculative.get("method") or "speculative decoding", params["base_url"]),
            }
        else:
            try:
                reading = acceptance(before[0], after[0] or "", engine, server_info=after[1])
                speculative_result = decide_acceptance(
                    reading,
                    speculative.get("floor"),
                    speculative=True,
                    method=speculative.get("method") or "speculative decoding",
                )
            except ValueError as error:
                speculative_result = {"ok": False, "status": "failed", "message": str(error)}

    passed = bool(accuracy["passed"]) and (speculative_result is None or bool(speculative_result.get("ok")))
    lines = [accuracy["message"]]
    if speculative_result is not None:
        lines.append(speculative_result.get("message", ""))
    message = "; ".join(line for line in lines if line)
    if release_id and not module.check_mode:
        _record(
            params["root"],
            release_id,
            {"at": time.time(), "accuracy": accuracy, "speculative": speculative_result, "passed": passed},
        )
    outcome = dict(
        changed=False, passed=passed, release_id=release_id, accuracy=accuracy,
        speculative=speculative_result, message=message,
    )
    if not passed:
        module.fail_json(msg="quality gate failed: " + message, **outcome)
    module.exit_json(**outcome)


if __name__ == "__main__":
    main()
