# -*- coding: utf-8 -*-
# Copyright: glm-deploy developers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The accuracy gate: a fixed question set sent through the served chat endpoint, scored exactly.

Runs on the target host (inside the glm.deploy.quality_gate module), so it uses the standard library only.

Why a small scorer of our own rather than lm-evaluation-harness or evalscope: both pull in torch/datasets and fetch
their data from the Hugging Face Hub at run time, which a GPU host serving a 700 GB model should not install and
the sandbox cannot reach. The published GLM-5 GSM8K figures come from SGLang's few-shot GSM8K script, whose whole
method is three rules, followed here so our scores are comparable with those figures:
  - the prompt is the k worked examples, each "Question: <q>\nAnswer: <worked answer>", separated by a blank line,
    then "Question: <q>\nAnswer:";
  - generation stops at the next "Question";
  - the answer is the last number in the generated text (commas removed), compared exactly with the reference.

A question set is one JSON document: name, source, license, format ("few_shot_qa" or "chat": the question is
the whole user message), max_tokens, stop, shots [{question, answer}], questions [{question, answer}].
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal, InvalidOperation
from urllib.error import HTTPError, URLError

from ansible.module_utils.urls import open_url

FORMATS = ("few_shot_qa", "chat")
# A number as GSM8K writes them: optional sign, digits, optional decimals ("1,000" loses its commas first).
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
# Wrong answers kept in the result, so a failed gate shows what the model said.
WRONG_SHOWN = 5


class QuestionSetError(ValueError):
    """A question set that cannot be used (missing fields, unknown format)."""


def load_question_set(text):
    """Parse and check a question set document; returns it as a dict."""
    try:
        document = json.loads(text)
    except ValueError as error:
        raise QuestionSetError("the question set is not JSON: %s" % error) from None
    if not isinstance(document, dict):
        raise QuestionSetError("the question set must be a JSON object")
    for key in ("name", "source", "format", "questions"):
        if key not in document:
            raise QuestionSetError("the question set lacks %r" % key)
    if document["format"] not in FORMATS:
        raise QuestionSetError("question set format %r is not one of %s" % (document["format"], ", ".join(FORMATS)))
    questions = document["questions"]
    if not isinstance(questions, list) or not questions:
        raise QuestionSetError("the question set %s has no questions" % document["name"])
    for index, item in enumerate([*questions, *document.get("shots", [])]):
        if not isinstance(item, dict) or not isinstance(item.get("question"), str) or "answer" not in item:
            raise QuestionSetError(
                "question set %s: entry %d needs a question and an answer" % (document["name"], index)
            )
    return document


def extract_number(text):
    """The last number in `text` (commas removed) as a string, or None when it holds none."""
    found = _NUMBER.findall((text or "").replace(",", ""))
    return found[-1] if found else None


def same_number(got, expected):
    """Whether two numbers written as text are equal ("18" == "18.0" == "18.00"; "-0" == "0")."""
    if got is None:
        return False
    try:
        return Decimal(str(got)) == Decimal(str(expected).replace(",", ""))
    except InvalidOperation:
        return False


def prompt_for(question_set, question):
    """The user message for one question, in the set's format."""
    if question_set["format"] == "chat":
        return question
    examples = "".join(
        "Question: %s\nAnswer: %s\n\n" % (shot["question"], shot["answer"]) for shot in question_set.get("shots", [])
    )
    return "%sQuestion: %s\nAnswer:" % (examples, question)


def chat_request(question_set, model, question):
    """The chat completion body: greedy, thinking off, the set's token budget and stop strings."""
    body = {
        "model": model,
        "messages": [{"role": "user", "content": prompt_for(question_set, question)}],
        "temperature": 0,
        "max_tokens": int(question_set.get("max_tokens", 512)),
        "chat_template_kwargs": {"enable_thinking": False},
    }
    if question_set.get("stop"):
        body["stop"] = list(question_set["stop"])
    return body


def post_json(url, body, api_key, timeout):
    """POST a JSON body with the API key; returns the decoded answer. Raises on HTTP errors and timeouts."""
    with open_url(
        url,  # the endpoint under test, built from the plan
        data=json.dumps(body).encode("utf-8"),
        headers={"Content-Type": "application/json", "Authorization": "Bearer %s" % api_key},
        method="POST",
        timeout=timeout,
    ) as answer:
        return json.loads(answer.read().decode("utf-8"))


def _answer_text(answer):
    choice = (answer.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    return message.get("content") or ""


def run_question_set(question_set, base_url, model, api_key, *, concurrency=8, request_timeout=120.0, post=post_json):
    """Ask every question of the set; returns the scored result (never raises for one failed request).

    `post` is how a request is sent (the default speaks HTTP to the endpoint).
    """
    url = base_url.rstrip("/") + "/v1/chat/completions"
    questions = question_set["questions"]
    results = [None] * len(questions)
    lock = threading.Lock()
    started = time.monotonic()

    def ask(index):
        item = questions[index]
        body = chat_request(question_set, model, item["question"])
        text, error = "", None
        # A connection refused or reset before any answer is tried once more (a busy listener's backlog); an HTTP
        # error or a timeout is the endpoint's answer and counts against it.
        for attempt in (1, 2):
            try:
                text, error = _answer_text(post(url, body, api_key, request_timeout)), None
                break
            except HTTPError as failure:
                text, error = "", "HTTP %s" % failure.code
                break
            except (ConnectionRefusedError, ConnectionResetError) as failure:
                text, error = "", "%s: %s" % (type(failure).__name__, failure)
                if attempt == 2:
                    break
            except (URLError, OSError, ValueError) as failure:
                text, error = "", "%s: %s" % (type(failure).__name__, failure)
                break
        got = extract_number(text)
        with lock:
            results[index] = {
                "expected": str(item["answer"]),
                "got": got,
                "correct": error is None and same_number(got, item["answer"]),
                "error": error,
                "text": text[-200:],
            }

    with ThreadPoolExecutor(max_workers=max(1, int(concurrency))) as pool:
        list(pool.map(ask, range(len(questions))))
    correct = sum(1 for result in results if result["correct"])
    errors = [result for result in results if result["error"]]
    wrong = [
        {"question": questions[index]["question"][-160:], "expected": result["expected"], "got": result["got"],
         "text": result["text"], "error": result["error"]}
        for index, result in enumerate(results)
        if not result["correct"]
    ]
    return {
        "set": question_set["name"],
        "total": len(questions),
        "correct": correct,
        "score": round(correct / float(len(questions)), 4),
        "errors": len(errors),
        "first_error": errors[0]["error"] if errors else None,
        "wrong": wrong[:WRONG_SHOWN],
        "seconds": round(time.monotonic() - started, 1),
    }


def decide(result, floor, max_drop_points=None, baseline=None):
    """Pass or fail one scored result: an absolute floor AND a bounded drop from the last good release.

    `baseline` is {"release_id", "score"} of the last release that passed on the same set, or None.
    Returns {"passed", "message", "drop_points"}.
    """
    score = result["score"]
    reasons = []
    where = "%s/%s on %s" % (result["correct"], result["total"], result["set"])
    if result["errors"]:
        where += ", %d request(s) failed: %s" % (result["errors"], result["first_error"])
    if score < floor:
        reasons.append("below the floor %.3f" % floor)
    drop_points = None
    if baseline is not None and baseline.get("score") is not None:
        drop_points = round((float(baseline["score"]) - score) * 100.0, 2)
        if max_drop_points is not None and drop_points > float(max_drop_points):
            reasons.append(
                "%.1f points below release %s's %.3f (at most %.1f allowed)"
                % (drop_points, baseline.get("release_id", "?"), float(baseline["score"]), float(max_drop_points))
            )
    if reasons:
        message = "accuracy %.3f (%s) is %s" % (score, where, " and ".join(reasons))
        return {"passed": False, "message": message, "drop_points": drop_points}
    message = "accuracy %.3f (%s) passed the floor %.3f" % (score, where, floor)
    if drop_points is not None:
        message += ", %+.1f points against release %s" % (-drop_points, baseline.get("release_id", "?"))
    return {"passed": True, "message": message, "drop_points": drop_points}
