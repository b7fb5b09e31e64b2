"""Schemathesis hooks for the gateway (loaded through SCHEMATHESIS_HOOKS=fuzz.hooks).

The subscribe endpoint is a Server-Sent Events stream that stays open until `max_s` passes (or
forever without it), so every request to it gets a short `max_s`: the stream closes by itself and
schemathesis judges the whole response. A valid value is replaced by another valid value and an
invalid one (negative testing) is left alone, so no check is weakened.
"""

from __future__ import annotations

import math

import schemathesis

SUBSCRIBE = "/v1/rooms/{room}/subscribe"
MAX_S = 0.1  # seconds one fuzzed subscribe stream stays open (its whole response is judged)


def bounded(value):
    """`max_s` as sent: a valid number (0 < x <= 86400) becomes MAX_S, anything else stays."""
    if value is None:
        return MAX_S
    if isinstance(value, (list, tuple)):  # a repeated parameter: the server reads the last
        return [bounded(v) for v in value] if value else MAX_S
    try:
        x = float(value)
    except (TypeError, ValueError):
        return value
    if isinstance(value, bool) or not math.isfinite(x) or not 0 < x <= 86400:
        return value
    return min(x, MAX_S)


@schemathesis.hook
def before_call(context, case, kwargs):
    if case.operation.path == SUBSCRIBE:
        query = dict(case.query or {})
        query["max_s"] = bounded(query.get("max_s"))
        case.query = query
