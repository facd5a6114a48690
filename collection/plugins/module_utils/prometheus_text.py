# -*- coding: utf-8 -*-
# Copyright: glm-deploy developers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""A reader of Prometheus' text exposition format (what vLLM and SGLang serve on /metrics), for spec_decode.py.

Pure, like the rest of module_utils: text in, an Exposition (samples, TYPE and HELP lines) out, or a
MetricsParseError naming the line. Nothing imports glm_deploy.
"""

from __future__ import absolute_import, division, print_function

import math
import re

__metaclass__ = type

_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_LABEL_ESCAPES = {"\\": "\\", '"': '"', "n": "\n"}
_HELP_ESCAPES = {"\\": "\\", "n": "\n"}


class MetricsParseError(ValueError):
    """Metrics text that is not in Prometheus' text exposition format."""


class Sample:
    """One line of a scrape: name, labels (a dict) and value (a float; NaN and +/-Inf allowed)."""

    __slots__ = ("labels", "name", "value")

    def __init__(self, name, labels, value):
        self.name = name
        self.labels = labels
        self.value = value

    def __repr__(self):
        return "Sample(%r, %r, %r)" % (self.name, self.labels, self.value)


class Exposition:
    """A parsed scrape: its samples in order, and the HELP and TYPE lines by metric family."""

    def __init__(self, samples, types, helps):
        self.samples = samples
        self.types = types
        self.helps = helps

    def select(self, name, **labels):
        """The samples called `name` whose labels include every given label=value."""
        return [
            sample
            for sample in self.samples
            if sample.name == name and all(sample.labels.get(key) == value for key, value in labels.items())
        ]

    def has(self, name):
        return any(sample.name == name for sample in self.samples)

    def total(self, name):
        """The sum of every series called `name` (all data-parallel engines, all ranks); None when there is none."""
        found = self.select(name)
        if not found:
            return None
        return math.fsum(sample.value for sample in found)


def _unescape(text, escapes, line_number, line):
    out = []
    index = 0
    while index < len(text):
        char = text[index]
        if char == "\\" and index + 1 < len(text) and text[index + 1] in escapes:
            out.append(escapes[text[index + 1]])
            index += 2
            continue
        if char == "\\":
            raise MetricsParseError(
                'metrics line %d: unknown escape %r in %r; the text format escapes only \\\\, \\" and \\n'
                % (line_number, text[index : index + 2], line)
            )
        out.append(char)
        index += 1
    return "".join(out)


def _parse_labels(text, start, line_number, line):
    """Labels from `{` at text[start]; returns (labels, index after `}`)."""
    labels = {}
    index = start + 1
    while True:
        while index < len(text) and text[index] in " \t":
            index += 1
        if index < len(text) and text[index] == "}":
            return labels, index + 1
        match = _LABEL_NAME.match(text, index)
        if not match:
            raise MetricsParseError(
                "metrics line %d: expected a label name or '}' at column %d of %r" % (line_number, index + 1, line)
            )
        name = match.group(0)
        index = match.end()
        while index < len(text) and text[index] in " \t":
            index += 1
        if text[index : index + 2] != '="':
            raise MetricsParseError(
                'metrics line %d: label %s must be followed by ="value" in %r' % (line_number, name, line)
            )
        index += 2
        value_start = index
        while index < len(text) and text[index] != '"':
            index += 2 if text[index] == "\\" else 1
        if index >= len(text):
            raise MetricsParseError(
                "metrics line %d: label %s's value is not closed by '\"' in %r" % (line_number, name, line)
            )
        if name in labels:
            raise MetricsParseError("metrics line %d: label %s appears twice in %r" % (line_number, name, line))
        labels[name] = _unescape(text[value_start:index], _LABEL_ESCAPES, line_number, line)
        index += 1
        while index < len(text) and text[index] in " \t":
            index += 1
        if index < len(text) and text[index] == ",":
            index += 1
            continue
        if index < len(text) and text[index] == "}":
            return labels, index + 1
        raise MetricsParseError("metrics line %d: expected ',' or '}' after label %s in %r" % (line_number, name, line))


def _parse_value(text, line_number, line):
    try:
        # float() reads the format's NaN, +Inf and -Inf as well as Go's exponent notation.
        return float(text)
    except ValueError:
        raise MetricsParseError(
            "metrics line %d: value %r is not a number (expected e.g. 12, 1.5e+06, NaN, +Inf) in %r"
            % (line_number, text, line)
        ) from None


def parse(text):
    """Prometheus text exposition format (version 0.0.4, what vLLM and SGLang serve on /metrics) -> Exposition.

    Raises MetricsParseError naming the line for anything else, so a proxy's HTML error page or a truncated scrape
    is reported as such instead of reading as "no speculative decoding".
    """
    if not isinstance(text, str):
        raise MetricsParseError("metrics text must be a string, got %s" % type(text).__name__)
    samples = []
    types = {}
    helps = {}
    for line_number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            parts = line[1:].strip().split(None, 2)
            if len(parts) >= 2 and parts[0] == "TYPE":
                types[parts[1]] = parts[2].strip() if len(parts) > 2 else "untyped"
            elif len(parts) >= 2 and parts[0] == "HELP":
                helps[parts[1]] = _unescape(parts[2] if len(parts) > 2 else "", _HELP_ESCAPES, line_number, line)
            # Any other comment (and OpenMetrics' "# EOF") carries nothing a reading needs.
            continue
        match = _METRIC_NAME.match(line)
        if not match:
            raise MetricsParseError(
                "metrics line %d: %r does not start with a metric name; is this Prometheus text from /metrics?"
                % (line_number, line[:200])
            )
        name = match.group(0)
        index = match.end()
        labels = {}
        if index < len(line) and line[index] == "{":
            labels, index = _parse_labels(line, index, line_number, line)
        rest = line[index:]
        # OpenMetrics exemplars follow the value after " # "; they are not part of the value.
        if " # " in rest:
            rest = rest.split(" # ", 1)[0]
        fields = rest.split()
        if not fields or len(fields) > 2:
            raise MetricsParseError(
                "metrics line %d: expected a value and an optional timestamp after %s in %r" % (line_number, name, line)
            )
        samples.append(Sample(name, labels, _parse_value(fields[0], line_number, line)))
    return Exposition(samples, types, helps)
