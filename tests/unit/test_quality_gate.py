"""The accuracy gate: the scorer, the decision, the shipped question sets, and the module run by ansible-playbook
against a stand-in chat endpoint over real HTTP (tests/equipment/graded_engine.py)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from tests.equipment.graded_engine import GradedEngine, serve
from tests.equipment.load import load_file
from tests.equipment.playbook import run_playbook

from glm_deploy.catalog import load_catalog
from glm_deploy.render import render_plan

REPO = Path(__file__).resolve().parents[2]
SETS = REPO / "collection" / "roles" / "verify" / "files" / "quality"
FIXTURES = REPO / "tests" / "fixtures" / "metrics"
API_KEY = "quality-gate-test-key-7d41c9e2a8"  # distinctive, so any leak is found by a plain search


quality = load_file("glm_quality_for_tests", REPO / "collection" / "plugins" / "module_utils" / "quality.py")


def _set(name: str) -> dict[str, Any]:
    return dict(quality.load_question_set((SETS / f"{name}.json").read_text()))


# ------------------------------------------------------------------------------------------------ the scorer


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("So she makes 9 * 2 = $18 every day.\n#### 18", "18"),
        ("The total is 1,234 dollars.", "1234"),
        ("81", "81"),
        ("It fell to -3 degrees", "-3"),
        ("about 2.50 each", "2.50"),
        ("no number here", None),
        ("", None),
        (None, None),
    ],
)
def test_the_answer_is_the_last_number(text: str | None, number: str | None) -> None:
    assert quality.extract_number(text) == number


@pytest.mark.parametrize(
    ("got", "expected", "same"),
    [("18", "18", True), ("18.0", "18", True), ("18.00", "18", True), ("-0", "0", True), ("19", "18", False),
     (None, "18", False), ("1234", "1,234", True), ("1e3", "1000", True), ("x", "1", False)],
)
def test_numbers_compare_by_value(got: str | None, expected: str, same: bool) -> None:
    assert quality.same_number(got, expected) is same


def test_few_shot_prompt_follows_sglangs_gsm8k_format() -> None:
    question_set = {"format": "few_shot_qa", "shots": [{"question": "Q1?", "answer": "A1 #### 1"},
                                                      {"question": "Q2?", "answer": "A2 #### 2"}]}
    assert quality.prompt_for(question_set, "Q3?") == (
        "Question: Q1?\nAnswer: A1 #### 1\n\nQuestion: Q2?\nAnswer: A2 #### 2\n\nQuestion: Q3?\nAnswer:"
    )
    assert quality.prompt_for({"format": "chat"}, "What is 1 + 2?") == "What is 1 + 2?"


def test_the_request_is_greedy_with_thinking_off_and_the_sets_budget() -> None:
    body = quality.chat_request(_set("gsm8k-test-200-5shot"), "glm-5", "How many?")
    assert body["temperature"] == 0
    assert body["chat_template_kwargs"] == {"enable_thinking": False}
    assert body["max_tokens"] == 512
    assert body["stop"] == ["Question:", "\n\n\n"]
    assert body["messages"][0]["content"].endswith("Question: How many?\nAnswer:")


@pytest.mark.parametrize(
    ("document", "error"),
    [
        ("not json", "not JSON"),
        ("[]", "JSON object"),
        ('{"name": "x", "source": "s", "format": "chat"}', "lacks 'questions'"),
        ('{"name": "x", "source": "s", "format": "essay", "questions": [1]}', "format 'essay'"),
        ('{"name": "x", "source": "s", "format": "chat", "questions": []}', "no questions"),
        ('{"name": "x", "source": "s", "format": "chat", "questions": [{"question": "q"}]}', "entry 0"),
    ],
)
def test_a_bad_question_set_is_refused_with_the_reason(document: str, error: str) -> None:
    with pytest.raises(quality.QuestionSetError, match=error):
        quality.load_question_set(document)


# ------------------------------------------------------------------------------------------------ the decision


def _result(correct: int, total: int = 60, errors: int = 0) -> dict[str, Any]:
    return {"set": "sandbox-addition-v1", "correct": correct, "total": total, "score": round(correct / total, 4),
            "errors": errors, "first_error": "HTTP 500" if errors else None}


def test_a_score_below_the_floor_fails_naming_score_and_floor() -> None:
    decision = quality.decide(_result(30), 0.9)
    assert not decision["passed"]
    assert decision["message"] == "accuracy 0.500 (30/60 on sandbox-addition-v1) is below the floor 0.900"


def test_a_drop_from_the_last_good_release_fails_even_above_the_floor() -> None:
    decision = quality.decide(_result(55), 0.9, 5.0, {"release_id": "r-good", "score": 1.0})
    assert not decision["passed"]
    assert decision["drop_points"] == pytest.approx(8.33)
    assert "8.3 points below release r-good's 1.000 (at most 5.0 allowed)" in decision["message"]


def test_floor_and_drop_both_named_when_both_fail() -> None:
    decision = quality.decide(_result(40), 0.9, 5.0, {"release_id": "r1", "score": 0.95})
    assert "below the floor 0.900 and 28.3 points below release r1's" in decision["message"]


def test_a_small_drop_and_a_rise_pass_and_say_so() -> None:
    small = quality.decide(_result(57), 0.9, 5.0, {"release_id": "r1", "score": 0.9667})
    assert small["passed"] and "-1.7 points against release r1" in small["message"]
    rise = quality.decide(_result(60), 0.9, 5.0, {"release_id": "r1", "score": 0.95})
    assert rise["passed"] and "+5.0 points" in rise["message"]


def test_without_a_baseline_only_the_floor_decides() -> None:
    decision = quality.decide(_result(54), 0.9, 5.0, None)
    assert decision["passed"] and decision["drop_points"] is None


def test_failed_requests_are_named_in_the_message() -> None:
    decision = quality.decide(_result(0, errors=60), 0.9)
    assert "60 request(s) failed: HTTP 500" in decision["message"]


# ------------------------------------------------------------------------------------------------ the shipped sets


def test_the_gsm8k_set_is_the_first_200_test_questions_with_5_worked_shots() -> None:
    gsm8k = _set("gsm8k-test-200-5shot")
    assert len(gsm8k["questions"]) == 200 and len(gsm8k["shots"]) == 5
    assert gsm8k["questions"][0]["answer"] == "18"  # Janet's ducks, GSM8K test line 1
    assert all(quality.extract_number(item["answer"]) == item["answer"] for item in gsm8k["questions"])
    assert all("####" in shot["answer"] for shot in gsm8k["shots"])
    assert "MIT" in gsm8k["license"] and "openai/grade-school-math" in gsm8k["source"]
    assert "Copyright (c) 2021 OpenAI" in (SETS / "LICENSE.gsm8k").read_text()


def test_the_sandbox_set_is_sums_of_two_numbers_below_100() -> None:
    sandbox = _set("sandbox-addition-v1")
    pairs = set()
    for item in sandbox["questions"]:
        a, b = (int(word) for word in item["question"].removeprefix("What is ").removesuffix("?").split(" + "))
        assert item["answer"] == str(a + b) and 0 <= a < 100 and 0 <= b < 100
        pairs.add((a, b))
    assert len(pairs) == len(sandbox["questions"]) == 60


def test_every_model_names_a_shipped_set_and_a_sourced_floor() -> None:
    catalog = load_catalog()
    for name, model in catalog.models.items():
        assert (SETS / f"{model.quality.question_set}.json").is_file(), name
        assert 0 < model.quality.floor <= 1 and model.quality.floor_source, name
        assert model.quality.max_drop_points >= 0 and model.quality.max_drop_points_source, name
        if model.has_mtp and model.speculative.engines:
            assert model.quality.acceptance is not None and model.quality.acceptance.source, name


def test_the_plan_carries_the_gate_and_the_acceptance_floor_only_with_speculative_decoding() -> None:
    catalog = load_catalog()
    with_mtp = render_plan(catalog, model="glm-5.1-fp8", engine="vllm", hardware="b200")
    assert with_mtp.speculative
    assert with_mtp.quality["set"] == "gsm8k-test-200-5shot" and with_mtp.quality["floor"] == 0.93
    assert with_mtp.quality["speculative"]["engine"] == "vllm"
    assert with_mtp.quality["speculative"]["floor"]["min_acceptance_length"] == 1.8
    eagle = render_plan(catalog, model="glm-5-fp8", engine="sglang", hardware="h200")
    assert eagle.quality["speculative"]["engine"] == "sglang"
    assert eagle.quality["speculative"]["method"] == "EAGLE over the MTP head"
    tiny = render_plan(catalog, model="glm-tiny", engine="vllm-cpu", hardware="cpu")
    assert tiny.quality["set"] == "sandbox-addition-v1" and tiny.quality["speculative"] is None


# ------------------------------------------------------------------------------------------------ the module


def _gate_playbook(tmp_path: Path, engine: GradedEngine, set_name: str, **options: Any) -> Path:
    arguments = {
        "base_url": engine.base_url,
        "api_key": API_KEY,
        "model": "glm-tiny",
        "question_set": (SETS / f"{set_name}.json").read_text(),
        "floor": 0.9,
        "max_drop_points": 5.0,
        "root": str(tmp_path / "state"),
        "concurrency": 8,
        **options,
    }
    playbook = tmp_path / "gate.yml"
    playbook.write_text(
        json.dumps(
            [
                {
                    "hosts": "localhost",
                    "gather_facts": False,
                    "tasks": [
                        {"name": "gate", "glm.deploy.quality_gate": arguments, "register": "gate"},
                        {"name": "show", "ansible.builtin.debug": {"var": "gate"}},
                    ],
                }
            ]
        )
    )
    return playbook


def _release_state(tmp_path: Path, current: str, records: dict[str, dict[str, Any]] | None = None) -> None:
    releases = tmp_path / "state" / "releases"
    for name in {current, *(records or {})}:
        (releases / name).mkdir(parents=True, exist_ok=True)
    (releases / "state.json").write_text(json.dumps({"current": current, "previous": None, "events": []}))
    for name, record in (records or {}).items():
        (releases / name / "quality.json").write_text(json.dumps(record))


def _run(tmp_path: Path, engine: GradedEngine, set_name: str = "sandbox-addition-v1", **options: Any) -> Any:
    completed = run_playbook(
        _gate_playbook(tmp_path, engine, set_name, **options), home=tmp_path, inventory="localhost,",
        args=["-c", "local", "-e", f"ansible_python_interpreter={sys.executable}"], timeout=240,
    )
    assert API_KEY not in completed.stdout + completed.stderr
    return completed


def _sandbox_engine(wrong: int = 0) -> GradedEngine:
    questions = [item["question"] for item in _set("sandbox-addition-v1")["questions"]]
    return GradedEngine(api_key=API_KEY, order=questions, wrong=wrong)


@pytest.mark.playbook


def test_a_model_that_answers_passes_and_the_result_is_recorded_for_the_release(tmp_path: Path) -> None:
    _release_state(tmp_path, "r-one")
    with serve(_sandbox_engine()) as engine:
        completed = _run(tmp_path, engine)
    assert completed.returncode == 0, completed.stdout[-3000:]
    assert "accuracy 1.000 (60/60 on sandbox-addition-v1) passed the floor 0.900" in completed.stdout
    record = json.loads((tmp_path / "state" / "releases" / "r-one" / "quality.json").read_text())
    assert record["passed"] and record["accuracy"]["score"] == 1.0
    chats = [request for request in engine.requests if request["path"] == "/v1/chat/completions"]
    assert len(chats) == 60 and all(request["authorized"] for request in chats)
    assert all(request["body"]["temperature"] == 0 for request in chats)
    assert API_KEY not in json.dumps(record)


@pytest.mark.playbook


def test_a_worse_model_fails_with_score_and_floor_and_shows_its_wrong_answers(tmp_path: Path) -> None:
    _release_state(tmp_path, "r-bad")
    with serve(_sandbox_engine(wrong=30)) as engine:
        completed = _run(tmp_path, engine)
    assert completed.returncode != 0
    assert "quality gate failed: accuracy 0.500 (30/60 on sandbox-addition-v1) is below the floor 0.900" in (
        completed.stdout
    )
    record = json.loads((tmp_path / "state" / "releases" / "r-bad" / "quality.json").read_text())
    assert not record["passed"] and len(record["accuracy"]["wrong"]) == 5


@pytest.mark.playbook


def test_a_drop_against_the_last_good_release_on_the_host_fails(tmp_path: Path) -> None:
    good = {"at": time.time() - 60, "passed": True, "accuracy": {"set": "sandbox-addition-v1", "score": 1.0,
                                                                   "passed": True}}
    older_bad = {"at": time.time() - 30, "passed": False, "accuracy": {"set": "sandbox-addition-v1", "score": 0.2,
                                                                        "passed": False}}
    _release_state(tmp_path, "r-new", {"r-good": good, "r-failed": older_bad})
    with serve(_sandbox_engine(wrong=5)) as engine:  # 55/60 = 0.917: above the floor, 8.3 points down
        completed = _run(tmp_path, engine)
    assert completed.returncode != 0
    assert "8.3 points below release r-good's 1.000 (at most 5.0 allowed)" in completed.stdout


@pytest.mark.playbook


def test_an_endpoint_that_refuses_every_question_fails_naming_the_error(tmp_path: Path) -> None:
    _release_state(tmp_path, "r-one")
    engine = _sandbox_engine()
    engine.fail_status = 500
    with serve(engine) as running:
        completed = _run(tmp_path, running)
    assert completed.returncode != 0
    assert "60 request(s) failed: HTTP 500" in completed.stdout


@pytest.mark.playbook


def test_the_few_shot_gsm8k_set_is_scored_through_the_module(tmp_path: Path) -> None:
    gsm8k = _set("gsm8k-test-200-5shot")
    engine = GradedEngine(
        api_key=API_KEY,
        answers={item["question"]: item["answer"] for item in gsm8k["questions"]},
        order=[item["question"] for item in gsm8k["questions"]],
        wrong=8,
    )
    _release_state(tmp_path, "r-one")
    with serve(engine) as running:
        completed = _run(tmp_path, running, "gsm8k-test-200-5shot", floor=0.94, max_drop_points=3.0, concurrency=32)
    assert completed.returncode == 0, completed.stdout[-3000:]
    assert "accuracy 0.960 (192/200 on gsm8k-test-200-5shot) passed the floor 0.940" in completed.stdout
    first = next(request for request in engine.requests if request["path"] == "/v1/chat/completions")
    assert first["body"]["messages"][0]["content"].startswith("Question: Janet")


@pytest.mark.parametrize(
    ("after", "passes", "words"),
    [
        ("vllm_mtp_healthy.prom", True, "meets"),
        ("vllm_mtp_collapsed.prom", False, "below the length floor 1.80"),
        ("vllm_no_spec.prom", False, "the plan enables MTP but vLLM reports no speculative decoding"),
    ],
)
@pytest.mark.playbook
def test_speculative_acceptance_is_read_over_the_gates_prompts(
    tmp_path: Path, after: str, passes: bool, words: str
) -> None:
    engine = _sandbox_engine()
    before = (FIXTURES / ("vllm_no_spec.prom" if after == "vllm_no_spec.prom" else "vllm_mtp_before.prom")).read_text()
    engine.metrics = [before, (FIXTURES / after).read_text()]
    _release_state(tmp_path, "r-one")
    floor = {"min_acceptance_length": 1.8, "min_acceptance_rate": 0.25, "source": "test floor"}
    with serve(engine) as running:
        completed = _run(tmp_path, running, speculative={"engine": "vllm", "method": "MTP", "floor": floor})
    assert (completed.returncode == 0) is passes, completed.stdout[-3000:]
    assert words in completed.stdout
    scrapes = [request for request in engine.requests if request["path"] == "/metrics"]
    assert len(scrapes) == 2
