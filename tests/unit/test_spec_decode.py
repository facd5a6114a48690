"""The speculative decoding floor: reading vLLM's and SGLang's metrics text and deciding on it.

The texts are reconstructed from the engines' source (tests/fixtures/metrics/README.md): no GPU here, and the CPU
engine has no speculative decoding to measure live.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "metrics"
# module_utils resolve as ansible_collections.glm.deploy through the repo's collections/ link, as on a host.
if str(REPO / "collections") not in sys.path:
    sys.path.insert(0, str(REPO / "collections"))

from ansible_collections.glm.deploy.plugins.module_utils import spec_decode  # noqa: E402

FLOOR = {
    "min_acceptance_length": 1.8,
    "min_acceptance_rate": 0.25,
    "source": "catalog models.glm-5.1-fp8.speculative.floor (vllm#55605 collapse at 1.03)",
}


def text(name: str) -> str:
    return (FIXTURES / name).read_text()


def vllm(before: str | None, after: str) -> dict[str, Any]:
    return spec_decode.acceptance(text(before) if before else None, text(after), "vllm")


def sglang(before: str | None, after: str, server_info: str | None = None) -> dict[str, Any]:
    info = json.loads(text(server_info)) if server_info else None
    return spec_decode.acceptance(text(before) if before else None, text(after), "sglang", server_info=info)


# -- the parser -----------------------------------------------------------------------------------------------


def test_parse_reads_a_whole_vllm_scrape_with_types_help_histograms_and_label_sets() -> None:
    scrape = spec_decode.parse(text("vllm_mtp_healthy.prom"))

    assert scrape.types["vllm:spec_decode_num_drafts_total"] == "counter"
    assert scrape.types["vllm:time_to_first_token_seconds"] == "histogram"
    assert scrape.helps["vllm:spec_decode_num_draft_tokens_total"] == "Number of draft tokens."
    positions = {s.labels["position"]: s.value for s in scrape.select(spec_decode.VLLM_ACCEPTED_PER_POSITION)}
    assert positions == {"0": 2582.0, "1": 1821.0, "2": 1154.0}
    assert scrape.select(spec_decode.VLLM_DRAFTS)[0].labels == {"engine": "0", "model_name": "glm-5.1-fp8"}
    inf_bucket = scrape.select("vllm:time_to_first_token_seconds_bucket", le="+Inf")
    assert [s.value for s in inf_bucket] == [59.0]
    assert scrape.total("process_resident_memory_bytes") == 2147602432.0
    assert scrape.total("vllm:request_success_total") == 59.0  # three finished_reason series summed


def test_parse_unescapes_label_values_and_reads_nan_inf_and_timestamps() -> None:
    scrape = spec_decode.parse(
        "# HELP odd A help with a \\\\ backslash\\nand a newline\n"
        "# TYPE odd gauge\n"
        'odd{path="C:\\\\models\\\\glm",quote="say \\"hi\\"",multi="a\\nb",} NaN\n'
        'odd{path="x"} +Inf 1767225600000\n'
        "odd -Inf\n"
        "# EOF\n"
    )

    first, second, third = scrape.select("odd")
    assert first.labels == {"path": "C:\\models\\glm", "quote": 'say "hi"', "multi": "a\nb"}
    assert math.isnan(first.value)
    assert second.value == math.inf
    assert third.value == -math.inf and third.labels == {}
    assert scrape.helps["odd"] == "A help with a \\ backslash\nand a newline"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("<html><body>502 Bad Gateway</body></html>", "does not start with a metric name"),
        ('vllm:x{engine="0" 1.0', "expected ',' or '}'"),
        ('vllm:x{engine="0} 1.0', "not closed"),
        ("vllm:x{engine=0} 1.0", '="value"'),
        ('vllm:x{engine="0",engine="1"} 1.0', "appears twice"),
        ("vllm:x twelve", "is not a number"),
        ("vllm:x", "expected a value"),
        ('vllm:x{a="\\t"} 1', "unknown escape"),
    ],
)
def test_parse_refuses_what_is_not_metrics_text_naming_the_line(line: str, expected: str) -> None:
    with pytest.raises(spec_decode.MetricsParseError, match="line 2") as error:
        spec_decode.parse("# TYPE vllm:x gauge\n" + line + "\n")
    assert expected in str(error.value)


# -- vLLM -------------------------------------------------------------------------------------------------------


def test_vllm_healthy_mtp_reads_rate_length_and_positions_over_the_window() -> None:
    reading = vllm("vllm_mtp_before.prom", "vllm_mtp_healthy.prom")

    assert reading["status"] == "measured"
    assert (reading["drafts"], reading["draft_tokens"], reading["accepted_tokens"]) == (2680, 8040, 4824)
    assert reading["acceptance_rate"] == pytest.approx(0.6)
    assert reading["acceptance_length"] == pytest.approx(2.8)
    assert reading["per_position_rates"] == pytest.approx([2251 / 2680, 1581 / 2680, 992 / 2680])
    assert "between the two scrapes" in reading["source"]


def test_vllm_without_a_before_scrape_counts_from_the_engine_start() -> None:
    reading = vllm(None, "vllm_mtp_healthy.prom")

    assert reading["drafts"] == 412 + 2680
    assert reading["acceptance_length"] == pytest.approx(1 + (733 + 4824) / (412 + 2680))
    assert "since the engine started" in reading["source"]


def test_vllm_healthy_mtp_passes_the_floor_naming_value_floor_and_source() -> None:
    decision = spec_decode.decide(vllm("vllm_mtp_before.prom", "vllm_mtp_healthy.prom"), FLOOR, method="MTP")

    assert decision["ok"] is True
    assert decision["status"] == "passed"
    message = decision["message"]
    assert "vLLM MTP acceptance length 2.80 tokens/step" in message
    assert "acceptance rate 60.0%" in message
    assert "length floor 1.80" in message and "rate floor 25.0%" in message
    assert FLOOR["source"] in message
    assert "\n" not in message


def test_vllm_collapsed_mtp_fails_the_floor() -> None:
    reading = vllm("vllm_mtp_before.prom", "vllm_mtp_collapsed.prom")
    decision = spec_decode.decide(reading, FLOOR, method="MTP")

    assert reading["acceptance_length"] == pytest.approx(1 + 219 / 7282)
    assert reading["per_position_rates"][0] == pytest.approx(175 / 7282)
    assert decision["ok"] is False
    assert decision["status"] == "failed"
    assert "acceptance length 1.03 tokens/step, acceptance rate 1.0%" in decision["message"]
    assert "is below the length floor 1.80 and the rate floor 25.0%" in decision["message"]
    assert FLOOR["source"] in decision["message"]


def test_vllm_rate_floor_alone_can_fail_a_length_that_passes() -> None:
    reading = vllm("vllm_mtp_before.prom", "vllm_mtp_healthy.prom")
    decision = spec_decode.decide(reading, {**FLOOR, "min_acceptance_rate": 0.7}, method="MTP")

    assert decision["ok"] is False
    assert "below the rate floor 70.0%" in decision["message"]
    assert "length floor" not in decision["message"]


def test_vllm_without_speculative_decoding_fails_a_plan_that_enables_mtp() -> None:
    reading = vllm("vllm_mtp_before.prom", "vllm_no_spec.prom")
    decision = spec_decode.decide(reading, FLOOR, method="MTP")

    assert reading["status"] == "absent"
    assert reading["acceptance_length"] is None
    assert decision["ok"] is False
    assert decision["message"].startswith("the plan enables MTP but vLLM reports no speculative decoding")


def test_vllm_without_speculative_decoding_is_fine_for_a_plan_without_it() -> None:
    decision = spec_decode.decide(vllm(None, "vllm_no_spec.prom"), FLOOR, speculative=False)

    assert decision["ok"] is True
    assert decision["status"] == "skipped"


def test_vllm_no_drafts_in_the_window_fails_saying_the_engine_reported_no_drafts() -> None:
    reading = vllm("vllm_mtp_healthy.prom", "vllm_mtp_healthy.prom")
    decision = spec_decode.decide(reading, FLOOR, method="MTP")

    assert reading["status"] == "no_drafts"
    assert decision["ok"] is False
    assert "the plan enables MTP but vLLM reported no drafts over the gate's prompts" in decision["message"]


def test_vllm_counter_reset_between_scrapes_says_the_engine_restarted() -> None:
    # "after" taken from a freshly started engine: its counters are below the "before" ones.
    reading = vllm("vllm_mtp_healthy.prom", "vllm_mtp_before.prom")
    decision = spec_decode.decide(reading, FLOOR, method="MTP")

    assert reading["status"] == "reset"
    assert "fell from 3092 to 412" in reading["detail"]
    assert "engine restarted" in reading["detail"]
    assert decision["ok"] is False
    assert decision["message"].startswith("MTP acceptance could not be measured: counter")


def test_vllm_sums_data_parallel_engines() -> None:
    def scrape(drafts: tuple[int, int], tokens: tuple[int, int], accepted: tuple[int, int]) -> str:
        lines = []
        for name, values in (("drafts", drafts), ("draft_tokens", tokens), ("accepted_tokens", accepted)):
            lines.append(f"# TYPE vllm:spec_decode_num_{name}_total counter")
            lines += [
                f'vllm:spec_decode_num_{name}_total{{engine="{i}",model_name="m"}} {v}.0' for i, v in enumerate(values)
            ]
        return "\n".join(lines) + "\n"

    reading = spec_decode.acceptance(
        scrape((10, 20), (30, 60), (20, 40)), scrape((110, 220), (330, 660), (220, 440)), "vllm"
    )

    assert reading["drafts"] == 300
    assert reading["acceptance_length"] == pytest.approx(1 + 600 / 300)
    assert reading["per_position_rates"] == []  # this release exported no per-position counter


def test_vllm_with_only_some_counters_names_what_is_missing() -> None:
    after = "# TYPE vllm:spec_decode_num_draft_tokens_total counter\nvllm:spec_decode_num_draft_tokens_total 5.0\n"
    reading = spec_decode.acceptance(None, after, "vllm")

    assert reading["status"] == "absent"
    assert "vllm:spec_decode_num_drafts_total" in reading["detail"]


def test_vllm_nan_counter_is_invalid_not_a_pass() -> None:
    after = text("vllm_mtp_healthy.prom").replace(
        'vllm:spec_decode_num_accepted_tokens_total{engine="0",model_name="glm-5.1-fp8"} 5557.0',
        'vllm:spec_decode_num_accepted_tokens_total{engine="0",model_name="glm-5.1-fp8"} NaN',
    )
    reading = spec_decode.acceptance(text("vllm_mtp_before.prom"), after, "vllm")

    assert reading["status"] == "invalid"
    assert spec_decode.decide(reading, FLOOR)["ok"] is False


# -- SGLang -----------------------------------------------------------------------------------------------------


def test_sglang_healthy_eagle_reads_the_gauge_after_the_prompts_and_passes() -> None:
    reading = sglang("sglang_eagle_before.prom", "sglang_eagle_healthy.prom", "sglang_server_info_healthy.json")
    decision = spec_decode.decide(reading, FLOOR, method="EAGLE")

    assert reading["status"] == "measured"
    assert reading["acceptance_length"] == pytest.approx(2.74)
    assert reading["acceptance_rate"] == pytest.approx(0.58)
    assert reading["generated_tokens"] == 7496
    assert reading["since_start_acceptance_length"] == pytest.approx(2.86)
    assert decision["ok"] is True
    assert "SGLang EAGLE acceptance length 2.74 tokens/step" in decision["message"]
    assert "7496 tokens generated between the scrapes" in decision["message"]
    assert FLOOR["source"] in decision["message"]


def test_sglang_collapsed_eagle_fails_the_floor() -> None:
    decision = spec_decode.decide(
        sglang("sglang_eagle_before.prom", "sglang_eagle_collapsed.prom"), FLOOR, method="EAGLE"
    )

    assert decision["ok"] is False
    assert "acceptance length 1.04 tokens/step" in decision["message"]
    assert "is below the length floor 1.80 and the rate floor 25.0%" in decision["message"]


def test_sglang_without_speculative_decoding_fails_a_plan_that_enables_it() -> None:
    reading = sglang("sglang_eagle_before.prom", "sglang_no_spec.prom", "sglang_server_info_no_spec.json")
    decision = spec_decode.decide(reading, FLOOR, method="EAGLE")

    assert reading["status"] == "no_drafts"
    assert reading["since_start_acceptance_length"] is None
    assert decision["ok"] is False
    assert "the plan enables EAGLE but SGLang reported no drafts" in decision["message"]
    assert spec_decode.decide(reading, FLOOR, speculative=False)["ok"] is True


def test_sglang_gauge_with_no_tokens_generated_is_not_about_the_gate() -> None:
    reading = sglang("sglang_eagle_healthy.prom", "sglang_eagle_healthy.prom")

    assert reading["status"] == "idle"
    assert spec_decode.decide(reading, FLOOR, method="EAGLE")["ok"] is False


def test_sglang_counter_reset_between_scrapes_says_the_engine_restarted() -> None:
    restarted = text("sglang_eagle_healthy.prom").replace("7.565068e+06", "7496.0")
    reading = spec_decode.acceptance(text("sglang_eagle_before.prom"), restarted, "sglang")

    assert reading["status"] == "reset"
    assert "fell from 7557572 to 7496" in reading["detail"]
    assert spec_decode.decide(reading, FLOOR)["ok"] is False


def test_sglang_averages_ranks_that_ran_speculative_steps_and_ignores_idle_ones() -> None:
    after = (
        "# TYPE sglang:spec_accept_length gauge\n"
        'sglang:spec_accept_length{dp_rank="0",engine_type="unified",model_name="m",tp_rank="0"} 2.5\n'
        'sglang:spec_accept_length{dp_rank="1",engine_type="unified",model_name="m",tp_rank="0"} 3.1\n'
        'sglang:spec_accept_length{dp_rank="2",engine_type="unified",model_name="m",tp_rank="0"} 0.0\n'
    )
    reading = spec_decode.acceptance(None, after, "sglang")

    assert reading["acceptance_length"] == pytest.approx(2.8)
    assert reading["acceptance_rate"] is None
    assert "on 2 of 3 series" in reading["detail"]


def test_sglang_without_metrics_falls_back_to_server_info_since_start_and_says_so() -> None:
    reading = spec_decode.acceptance(None, "", "sglang", server_info=text("sglang_server_info_healthy.json"))

    assert reading["status"] == "measured"
    assert reading["acceptance_length"] == pytest.approx(2.86)
    assert "since the engine started" in reading["source"]


def test_sglang_with_nothing_to_read_is_absent() -> None:
    reading = spec_decode.acceptance(None, "", "sglang", server_info={"internal_states": [{"load": 0}]})

    assert reading["status"] == "absent"
    assert "--enable-metrics" in reading["detail"]


@pytest.mark.parametrize(
    ("server_info", "expected"),
    [
        ({"internal_states": [{"avg_spec_accept_length": 2.0}, {"avg_spec_accept_length": 3.0}]}, 2.5),
        ({"internal_states": [{"avg_spec_accept_length": None}, {"avg_spec_accept_length": 3.0}]}, 3.0),
        ({"avg_spec_accept_length": 2.2}, 2.2),  # older releases
        ({"decode": [{"avg_spec_accept_length": 3.3}], "internal_states": [{"load": 1}]}, 3.3),  # PD router
        ({"internal_states": [{"load": 0}]}, None),
        (None, None),
    ],
)
def test_server_info_acceptance_length_reads_every_known_shape(server_info: Any, expected: float | None) -> None:
    assert spec_decode.server_info_acceptance_length(server_info) == (
        pytest.approx(expected) if expected is not None else None
    )


def test_server_info_that_is_not_json_is_an_error() -> None:
    with pytest.raises(spec_decode.MetricsParseError, match="not JSON"):
        spec_decode.server_info_acceptance_length("<html>")


# -- decisions and inputs ----------------------------------------------------------------------------------------


def test_a_measured_reading_without_a_catalog_floor_passes_and_says_there_is_nothing_to_compare() -> None:
    decision = spec_decode.decide(vllm("vllm_mtp_before.prom", "vllm_mtp_collapsed.prom"), None, method="MTP")

    assert decision["ok"] is True
    assert "the catalog has no floor" in decision["message"]


def test_a_rate_floor_on_an_engine_that_reports_no_rate_fails_rather_than_passing_unread() -> None:
    reading = spec_decode.acceptance(
        None, '# TYPE sglang:spec_accept_length gauge\nsglang:spec_accept_length{tp_rank="0"} 2.5\n', "sglang"
    )
    decision = spec_decode.decide(reading, {"min_acceptance_rate": 0.3, "source": "x"})

    assert decision["ok"] is False
    assert "names only a rate" in decision["message"]


@pytest.mark.parametrize(
    ("floor", "expected"),
    [
        ({"min_acceptance_length": 0.5, "source": "s"}, "at least 1"),
        ({"min_acceptance_length": "2", "source": "s"}, "not a length"),
        ({"min_acceptance_rate": 1.5, "source": "s"}, "in \\(0, 1\\]"),
        ({"min_acceptance_length": 2.0}, "names no source"),
        ({"source": "s"}, "neither"),
        ({"min_acceptance_length": 2.0, "source": "s", "max": 3}, "unknown keys max"),
        ([2.0], "must be a mapping"),
    ],
)
def test_a_floor_that_cannot_be_read_is_refused_with_what_would_work(floor: Any, expected: str) -> None:
    reading = vllm("vllm_mtp_before.prom", "vllm_mtp_healthy.prom")
    with pytest.raises(ValueError, match=expected):
        spec_decode.decide(reading, floor)


def test_an_unknown_engine_and_a_missing_after_scrape_are_refused() -> None:
    with pytest.raises(ValueError, match="use one of vllm, sglang"):
        spec_decode.acceptance(None, "", "trtllm")
    with pytest.raises(ValueError, match="after the gate's prompts"):
        spec_decode.acceptance("", None, "vllm")


def test_a_broken_scrape_names_which_scrape() -> None:
    with pytest.raises(spec_decode.MetricsParseError, match="the before scrape: metrics line 1"):
        spec_decode.acceptance("<html>502</html>", text("vllm_mtp_healthy.prom"), "vllm")
