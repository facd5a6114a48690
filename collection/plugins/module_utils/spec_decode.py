# -*- coding: utf-8 -*-
# Copyright: glm-deploy developers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Speculative decoding acceptance, read from the engine's own metrics, and the gate's decision on it.

A speculative decoding head that stops agreeing with the model (vllm#55605: GLM MTP acceptance at ~2%) passes every
health and accuracy check and only shows as 30-40% less throughput. The engines count what their drafts achieve:

- vLLM (vllm/v1/spec_decode/metrics.py, `SpecDecodingProm`) exports counters, one series per `engine` (data-parallel
  rank) and `model_name`: `vllm:spec_decode_num_drafts_total`, `vllm:spec_decode_num_draft_tokens_total`,
  `vllm:spec_decode_num_accepted_tokens_total` and, with a `position` label,
  `vllm:spec_decode_num_accepted_tokens_per_pos_total`. They exist only when speculative decoding is on. Over a
  window between two scrapes: acceptance rate = d(accepted) / d(draft tokens); mean acceptance length, by vLLM's
  convention including the bonus token, = 1 + d(accepted) / d(drafts); rate at position i = d(accepted at i) /
  d(drafts).
- SGLang (python/sglang/srt/metrics/collector.py) exports gauges `sglang:spec_accept_length` (and in newer releases
  `sglang:spec_accept_rate`) per `tp_rank`/`dp_rank`, set at each decode log interval from the steps of that
  interval; 0 while no speculative step ran (the gauge exists with speculative decoding off too). `/server_info`
  lists, per data-parallel rank in `internal_states`, `avg_spec_accept_length`: accepted tokens (bonus included)
  per verify step since the engine started. A gauge has no window, so the reading takes the gauge after the gate's
  prompts and checks with `sglang:generation_tokens_total` that the engine decoded in between.

Both engines' acceptance length counts tokens per target-model step (1 = nothing accepted, draft tokens + 1 = all),
so one floor in tokens per step reads the same on both. Everything here is pure: text in, plain dicts out, so an
Ansible module on the host and unit tests on recorded metrics text run the same code. Nothing imports glm_deploy.
The metrics text itself is read by prometheus_text.py.
"""

from __future__ import absolute_import, division, print_function

import json
import math

from ansible_collections.glm.deploy.plugins.module_utils.prometheus_text import Exposition, MetricsParseError, parse

__metaclass__ = type

VLLM_DRAFTS = "vllm:spec_decode_num_drafts_total"
VLLM_DRAFT_TOKENS = "vllm:spec_decode_num_draft_tokens_total"
VLLM_ACCEPTED = "vllm:spec_decode_num_accepted_tokens_total"
VLLM_ACCEPTED_PER_POSITION = "vllm:spec_decode_num_accepted_tokens_per_pos_total"
SGLANG_ACCEPT_LENGTH = "sglang:spec_accept_length"
SGLANG_ACCEPT_RATE = "sglang:spec_accept_rate"
SGLANG_GENERATION_TOKENS = "sglang:generation_tokens_total"

ENGINES = ("vllm", "sglang")
ENGINE_NAMES = {"vllm": "vLLM", "sglang": "SGLang"}

# What a reading can be. Only "measured" carries an acceptance length; the others say why there is none.
MEASURED = "measured"
ABSENT = "absent"  # the engine exports no speculative decoding metrics at all
NO_DRAFTS = "no_drafts"  # the metrics exist, but no draft was verified in the window
IDLE = "idle"  # SGLang: no token was generated between the scrapes, so the gauge is not about the gate's prompts
RESET = "reset"  # a counter went down between the scrapes: the engine restarted
INVALID = "invalid"  # a value the reading needs is NaN or infinite


def _as_exposition(text_or_exposition, which):
    if text_or_exposition is None:
        return None
    if isinstance(text_or_exposition, Exposition):
        return text_or_exposition
    try:
        return parse(text_or_exposition)
    except MetricsParseError as error:
        raise MetricsParseError("the %s scrape: %s" % (which, error)) from None


def _reading(engine, status, detail, source, **values):
    reading = {
        "engine": engine,
        "status": status,
        "acceptance_length": None,
        "acceptance_rate": None,
        "per_position_rates": [],
        "drafts": None,
        "draft_tokens": None,
        "accepted_tokens": None,
        "generated_tokens": None,
        "since_start_acceptance_length": None,
        "source": source,
        "detail": detail,
    }
    reading.update(values)
    return reading


def _finite(*values):
    return all(value is None or math.isfinite(value) for value in values)


def _vllm(before, after):
    source = "vLLM counters %s, %s and %s between the two scrapes" % (VLLM_ACCEPTED, VLLM_DRAFT_TOKENS, VLLM_DRAFTS)
    if before is None:
        source = "vLLM counters %s, %s and %s since the engine started" % (
            VLLM_ACCEPTED,
            VLLM_DRAFT_TOKENS,
            VLLM_DRAFTS,
        )
    names = (VLLM_DRAFTS, VLLM_DRAFT_TOKENS, VLLM_ACCEPTED)
    present = [name for name in names if after.has(name)]
    if not present:
        return _reading(
            "vllm",
            ABSENT,
            "the engine exports no vllm:spec_decode_* counters: it runs without speculative decoding",
            source,
        )
    missing = [name for name in names if name not in present]
    if missing:
        return _reading(
            "vllm",
            ABSENT,
            "the engine exports %s but not %s: a vLLM release this reading does not know"
            % (", ".join(present), ", ".join(missing)),
            source,
        )
    deltas = {}
    for name in names:
        now = after.total(name)
        then = before.total(name) if before is not None else 0.0
        if then is None:
            # The counters appear with the first draft on some releases; before any draft they count from 0.
            then = 0.0
        if not _finite(now, then):
            return _reading("vllm", INVALID, "counter %s reads %s (was %s): not a count" % (name, now, then), source)
        if now < then:
            return _reading(
                "vllm",
                RESET,
                "counter %s fell from %s to %s between the scrapes: the engine restarted "
                "in between, so the window is void; measure again" % (name, _number(then), _number(now)),
                source,
            )
        deltas[name] = now - then
    drafts, draft_tokens, accepted = deltas[VLLM_DRAFTS], deltas[VLLM_DRAFT_TOKENS], deltas[VLLM_ACCEPTED]
    if drafts == 0:
        return _reading(
            "vllm",
            NO_DRAFTS,
            "no draft was verified between the scrapes (%s did not move)" % VLLM_DRAFTS,
            source,
            drafts=0.0,
            draft_tokens=draft_tokens,
            accepted_tokens=accepted,
        )
    positions = {}
    for sample in after.select(VLLM_ACCEPTED_PER_POSITION):
        position = sample.labels.get("position")
        if position is None or not position.isdigit():
            continue
        positions[int(position)] = positions.get(int(position), 0.0) + sample.value
    if before is not None:
        for sample in before.select(VLLM_ACCEPTED_PER_POSITION):
            position = sample.labels.get("position")
            if position is not None and position.isdigit() and int(position) in positions:
                positions[int(position)] -= sample.value
    per_position = [positions[key] / drafts for key in sorted(positions)]
    if any(rate < 0 or not math.isfinite(rate) for rate in per_position):
        per_position = []  # a per-position counter reset alone (never seen) must not fail a reading that stands
    rate = accepted / draft_tokens if draft_tokens > 0 else None
    length = 1.0 + accepted / drafts
    detail = "%s drafts, %s draft tokens, %s accepted" % (_number(drafts), _number(draft_tokens), _number(accepted))
    return _reading(
        "vllm",
        MEASURED,
        detail,
        source,
        acceptance_length=length,
        acceptance_rate=rate,
        per_position_rates=per_position,
        drafts=drafts,
        draft_tokens=draft_tokens,
        accepted_tokens=accepted,
    )


def server_info_acceptance_length(server_info):
    """SGLang's `/server_info` (a dict or its JSON text) -> mean `avg_spec_accept_length` over its ranks, or None.

    Current releases put one entry per data-parallel rank in `internal_states`; older ones had the field at the top
    level, and the PD router under `decode[0]`. A rank with no speculative step yet leaves the field out or null.
    """
    if server_info is None:
        return None
    if isinstance(server_info, str):
        try:
            server_info = json.loads(server_info)
        except ValueError as error:
            raise MetricsParseError("/server_info is not JSON (%s): %r" % (error, server_info[:200])) from None
    if not isinstance(server_info, dict):
        raise MetricsParseError("/server_info must be a JSON object, got %s" % type(server_info).__name__)
    states = server_info.get("internal_states")
    decode = server_info.get("decode")
    # The first place that holds the field wins: the ranks' own states, then a PD router's decode servers, then
    # the top level of older releases.
    for group in (states, decode, [server_info]):
        if not isinstance(group, list):
            continue
        values = [
            float(state["avg_spec_accept_length"])
            for state in group
            if isinstance(state, dict)
            and isinstance(state.get("avg_spec_accept_length"), (int, float))
            and not isinstance(state.get("avg_spec_accept_length"), bool)
            and math.isfinite(state["avg_spec_accept_length"])
            and state["avg_spec_accept_length"] > 0
        ]
        if values:
            return math.fsum(values) / len(values)
    return None


def _sglang(before, after, server_info):
    since_start = server_info_acceptance_length(server_info)
    source = "SGLang gauge %s after the gate's prompts" % SGLANG_ACCEPT_LENGTH
    generated = None
    now_tokens = after.total(SGLANG_GENERATION_TOKENS)
    if before is not None and now_tokens is not None:
        then_tokens = before.total(SGLANG_GENERATION_TOKENS)
        if then_tokens is not None:
            if not _finite(now_tokens, then_tokens):
                return _reading(
                    "sglang",
                    INVALID,
                    "%s reads %s (was %s): not a count" % (SGLANG_GENERATION_TOKENS, now_tokens, then_tokens),
                    source,
                )
            if now_tokens < then_tokens:
                return _reading(
                    "sglang",
                    RESET,
                    "counter %s fell from %s to %s between the scrapes: the engine "
                    "restarted in between, so the window is void; measure again"
                    % (SGLANG_GENERATION_TOKENS, _number(then_tokens), _number(now_tokens)),
                    source,
                    since_start_acceptance_length=since_start,
                )
            generated = now_tokens - then_tokens
            if generated == 0:
                return _reading(
                    "sglang",
                    IDLE,
                    "the engine generated no token between the scrapes (%s did not "
                    "move), so its gauge is not about the gate's prompts" % SGLANG_GENERATION_TOKENS,
                    source,
                    generated_tokens=0.0,
                    since_start_acceptance_length=since_start,
                )
    gauges = after.select(SGLANG_ACCEPT_LENGTH)
    if not gauges:
        if since_start is not None:
            # /metrics without the gauge (an engine started without --enable-metrics serves none): the cumulative
            # figure is all there is, and it says so in the source.
            return _reading(
                "sglang",
                MEASURED,
                "avg_spec_accept_length %.2f since the engine started" % since_start,
                "SGLang /server_info avg_spec_accept_length since the engine started",
                acceptance_length=since_start,
                generated_tokens=generated,
                since_start_acceptance_length=since_start,
            )
        return _reading(
            "sglang",
            ABSENT,
            "the scrape has no %s gauge and /server_info no avg_spec_accept_length: "
            "the engine runs without speculative decoding, or without --enable-metrics" % SGLANG_ACCEPT_LENGTH,
            source,
            generated_tokens=generated,
        )
    if not _finite(*(sample.value for sample in gauges)):
        return _reading(
            "sglang",
            INVALID,
            "%s reads %s: not a length" % (SGLANG_ACCEPT_LENGTH, ", ".join(str(sample.value) for sample in gauges)),
            source,
        )
    # A length is at least 1 (the bonus token) once a speculative step ran; the gauge rests at 0 on ranks that ran
    # none in their last log interval (an idle data-parallel rank), so those do not pull the mean down.
    lengths = [sample.value for sample in gauges if sample.value >= 1.0]
    if not lengths:
        return _reading(
            "sglang",
            NO_DRAFTS,
            "%s is 0 on every rank: no speculative step ran in the last log interval" % SGLANG_ACCEPT_LENGTH,
            source,
            generated_tokens=generated,
            since_start_acceptance_length=since_start,
        )
    rates = [
        sample.value
        for sample in after.select(SGLANG_ACCEPT_RATE)
        if math.isfinite(sample.value) and 0 < sample.value <= 1
    ]
    length = math.fsum(lengths) / len(lengths)
    detail = "%s on %d of %d series" % (SGLANG_ACCEPT_LENGTH, len(lengths), len(gauges))
    if generated is not None:
        detail += ", %s tokens generated between the scrapes" % _number(generated)
    return _reading(
        "sglang",
        MEASURED,
        detail,
        source,
        acceptance_length=length,
        acceptance_rate=math.fsum(rates) / len(rates) if rates else None,
        generated_tokens=generated,
        since_start_acceptance_length=since_start,
    )


def acceptance(before_text, after_text, engine, server_info=None):
    """The speculative decoding acceptance the engine reports over the window between two scrapes of /metrics.

    before_text: the scrape taken before the gate's prompts (None: count from the engine's start); after_text: the
    one after; engine: "vllm" or "sglang"; server_info: SGLang's /server_info (dict or JSON text), optional.
    Returns a dict: engine, status (measured, absent, no_drafts, idle, reset, invalid), acceptance_length (tokens per
    target step, bonus included; None unless measured), acceptance_rate (accepted / draft tokens, or None),
    per_position_rates (vLLM), drafts, draft_tokens, accepted_tokens (vLLM deltas), generated_tokens (SGLang delta),
    since_start_acceptance_length (SGLang /server_info), source (what was read) and detail (one sentence).
    """
    if engine not in ENGINES:
        raise ValueError("engine %r has no speculative decoding reading; use one of %s" % (engine, ", ".join(ENGINES)))
    if after_text is None:
        raise ValueError("after_text is None: the reading needs the scrape taken after the gate's prompts")
    before = _as_exposition(before_text, "before")
    after = _as_exposition(after_text, "after")
    if engine == "vllm":
        return _vllm(before, after)
    return _sglang(before, after, server_info)


def _number(value):
    return "%d" % value if float(value).is_integer() else "%.2f" % value


def _check_floor(floor):
    if floor is None:
        return None
    if not isinstance(floor, dict):
        raise ValueError(
            "floor must be a mapping like {min_acceptance_length: 1.8, min_acceptance_rate: 0.25, "
            "source: ...}, got %r" % (floor,)
        )
    unknown = sorted(set(floor) - {"min_acceptance_length", "min_acceptance_rate", "source"})
    if unknown:
        raise ValueError(
            "floor has unknown keys %s; it takes min_acceptance_length, min_acceptance_rate and source"
            % ", ".join(unknown)
        )
    length = floor.get("min_acceptance_length")
    rate = floor.get("min_acceptance_rate")
    if length is None and rate is None:
        raise ValueError("floor %r names neither min_acceptance_length nor min_acceptance_rate" % (floor,))
    if length is not None and (isinstance(length, bool) or not isinstance(length, (int, float)) or not length >= 1):
        raise ValueError(
            "floor min_acceptance_length %r is not a length: tokens per step are at least 1 (the "
            "bonus token), e.g. 1.8" % (length,)
        )
    if rate is not None and (isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 < rate <= 1):
        raise ValueError("floor min_acceptance_rate %r is not a fraction in (0, 1], e.g. 0.25" % (rate,))
    source = floor.get("source")
    if not isinstance(source, str) or not source.strip():
        raise ValueError("floor %r names no source; every catalog floor says where its number comes from" % (floor,))
    return floor


def decide(reading, floor, speculative=True, method="speculative decoding"):
    """The gate's decision on an acceptance() reading.

    floor: {min_acceptance_length (tokens per step), min_acceptance_rate (optional; read where the engine reports a
    rate), source} from the catalog, or None when the catalog has no floor for the plan. speculative: whether the
    plan enables speculative decoding; method: its name for the message ("MTP", "EAGLE").
    Returns {ok, status ("passed", "failed", "skipped"), message (one line naming the measured value, the floor and
    its source), reading, floor}.
    """
    floor = _check_floor(floor)
    engine = ENGINE_NAMES.get(reading.get("engine"), str(reading.get("engine")))
    status = reading.get("status")

    def result(ok, outcome, message):
        return {"ok": ok, "status": outcome, "message": message, "reading": reading, "floor": floor}

    if not speculative:
        if status == MEASURED:
            return result(
                True,
                "skipped",
                "the plan has no speculative decoding, yet %s reports acceptance length "
                "%.2f; nothing to compare" % (engine, reading["acceptance_length"]),
            )
        return result(True, "skipped", "the plan has no speculative decoding; nothing to measure")
    if status == ABSENT:
        return result(
            False,
            "failed",
            "the plan enables %s but %s reports no speculative decoding: %s" % (method, engine, reading.get("detail")),
        )
    if status in (NO_DRAFTS, IDLE):
        return result(
            False,
            "failed",
            "the plan enables %s but %s reported no drafts over the gate's prompts: %s"
            % (method, engine, reading.get("detail")),
        )
    if status in (RESET, INVALID):
        return result(False, "failed", "%s acceptance could not be measured: %s" % (method, reading.get("detail")))
    if status != MEASURED:
        raise ValueError("reading status %r is not one acceptance() returns" % (status,))

    length = reading["acceptance_length"]
    rate = reading.get("acceptance_rate")
    measured = "%s %s acceptance length %.2f tokens/step" % (engine, method, length)
    if rate is not None:
        measured += ", acceptance rate %.1f%%" % (100 * rate)
    measured += " (%s; %s)" % (reading.get("detail"), reading.get("source"))
    if floor is None:
        return result(True, "passed", measured + "; the catalog has no floor for this plan, nothing to compare")
    below = []
    meets = []
    min_length = floor.get("min_acceptance_length")
    min_rate = floor.get("min_acceptance_rate")
    if min_length is not None:
        (below if length < min_length else meets).append("length floor %.2f" % min_length)
    if min_rate is not None and rate is not None:
        (below if rate < min_rate else meets).append("rate floor %.1f%%" % (100 * min_rate))
    if below:
        return result(
            False, "failed", "%s is below the %s (source: %s)" % (measured, " and the ".join(below), floor["source"])
        )
    if not meets:
        # Only a rate floor, and an engine that reports no rate: the floor cannot be read, which is not a pass.
        return result(
            False,
            "failed",
            "%s; the floor names only a rate, which %s does not report (source: %s)"
            % (measured, engine, floor["source"]),
        )
    return result(True, "passed", "%s meets the %s (source: %s)" % (measured, " and the ".join(meets), floor["source"]))
