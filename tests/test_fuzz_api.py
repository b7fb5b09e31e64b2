"""schemathesis against a real gateway (on the suite's real 7-server cluster): every check, every
phase, a fixed seed, the SSE endpoint included (fuzz/hooks.py bounds its streams with `max_s`).

`make fuzz` runs the same for minutes with a random seed (fuzz/__main__.py).
"""

from __future__ import annotations

import json

from fuzz import api

SEED = 20261202
EXAMPLES = 40  # per operation and phase: about half a minute on an idle machine


def test_schemathesis_finds_nothing(shared_gateway, tmp_path):
    outcome = api.run(shared_gateway, tmp_path, seed=SEED, max_examples=EXAMPLES, timeout_s=600)
    log = outcome.log.read_text(errors="replace")
    assert outcome.ok, f"{outcome.line()}\n{log[-8000:]}"
    assert outcome.seed == SEED and outcome.complete
    report = json.loads((tmp_path / "schemathesis.json").read_text())
    # every operation was reached with requests it accepted, the SSE stream among them
    rates = report["valid_rates"]
    assert outcome.operations == len(rates) == 6
    for op, phases in rates.items():
        assert phases["fuzzing"]["accepted"] > 0, (op, phases)
    assert rates["GET /v1/rooms/{room}/subscribe"]["fuzzing"]["accepted"] >= EXAMPLES // 2
    assert all(report["phases"][p]["status"] == "success"
               for p in ("coverage", "fuzzing", "stateful")), report["phases"]


def test_hooks_bound_only_valid_max_s():
    from fuzz.hooks import MAX_S, bounded
    assert bounded(None) == MAX_S and bounded(3600) == MAX_S and bounded("86400") == MAX_S
    assert bounded(0.05) == 0.05
    assert bounded([10, "x"]) == [MAX_S, "x"]
    for invalid in (0, -1, "abc", 86401, float("inf"), True):
        assert bounded(invalid) == invalid  # negative cases stay negative
