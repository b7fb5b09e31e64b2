"""From a chaostoolkit journal to the drill's summary entry (pure: dicts in, dicts out).

Each steady-state probe of an experiment is one tolerance; this module re-evaluates every one of
them against the final verdict, so the report can show all of them even though chaoslib stops
the hypothesis at the first probe that fails.
"""

from __future__ import annotations

from numbers import Number

STATUSES = ("passed", "deviated", "failed", "aborted", "interrupted", "error")


def tolerance_text(tol) -> str:
    if isinstance(tol, dict) and tol.get("type") == "range":
        lo, hi = tol.get("range", [None, None])
        return f"{lo:g} … {hi:g}" if isinstance(lo, Number) and isinstance(hi, Number) else str(tol)
    if isinstance(tol, bool):
        return f"== {str(tol).lower()}"
    if isinstance(tol, Number):
        return f"== {tol:g}"
    return str(tol)


def within(tol, value) -> bool | None:
    """chaoslib's tolerance semantics for the kinds our experiments use (None: not decidable)."""
    if isinstance(tol, bool):
        return value is tol or value == tol
    if isinstance(tol, Number):
        return isinstance(value, Number) and value == tol
    if isinstance(tol, dict) and tol.get("type") == "range":
        lo, hi = tol["range"]
        return isinstance(value, Number) and not isinstance(value, bool) and lo <= value <= hi
    return None


def _journal_outputs(journal: dict, when: str) -> dict[str, dict]:
    ss = (journal.get("steady_states") or {}).get(when) or {}
    return {p.get("activity", {}).get("name"): p for p in ss.get("probes", [])}


def evaluate_checks(experiment: dict, verdict: dict | None, journal: dict | None) -> list[dict]:
    """One row per steady-state probe: name, metric, value, tolerance, ok (None: not judged)."""
    after = _journal_outputs(journal or {}, "after")
    rows = []
    for probe in (experiment.get("steady-state-hypothesis") or {}).get("probes", []):
        name = probe.get("name", "?")
        tol = probe.get("tolerance")
        provider = probe.get("provider") or {}
        metric = (provider.get("arguments") or {}).get("metric")
        row = {"probe": name, "metric": metric or provider.get("func"), "tolerance": tol,
               "tolerance_text": tolerance_text(tol), "value": None, "ok": None}
        ran = after.get(name)
        if metric and verdict is not None and metric in verdict:
            row["value"] = verdict[metric]
            row["ok"] = within(tol, verdict[metric])
        elif ran is not None:
            row["value"] = ran.get("output")
            row["ok"] = bool(ran.get("tolerance_met")) and ran.get("status") == "succeeded"
        if ran is not None and ran.get("status") == "failed":
            row["ok"] = False
            row["error"] = ran.get("exception", [""])[-1].strip() if ran.get("exception") else ""
        rows.append(row)
    return rows


def failed_checks(journal: dict | None, checks: list[dict]) -> list[str]:
    names = [c["probe"] for c in checks if c.get("ok") is False]
    before = _journal_outputs(journal or {}, "before")
    for name, p in before.items():
        if p.get("tolerance_met") is False or p.get("status") == "failed":
            names.append(f"before the fault: {name}")
    for r in (journal or {}).get("run") or []:
        if r.get("status") == "failed":
            why = (r.get("exception") or [""])[-1].strip().split(": ", 1)[-1]
            names.append(f"action {r.get('activity', {}).get('name')} failed: {why}")
    return names


def status_of(journal: dict | None) -> str:
    """passed only when the run completed, both hypotheses held and every method step worked:
    chaoslib itself says "completed" when the check before the method was not met, and carries
    on after a failed action."""
    if not journal:
        return "error"
    if journal.get("deviated"):
        return "deviated"
    status = journal.get("status")
    if status != "completed":
        return status if status in STATUSES else "error"
    before = (journal.get("steady_states") or {}).get("before")
    if before is not None and not before.get("steady_state_met"):
        return "failed"
    if any(r.get("status") == "failed" for r in journal.get("run") or []):
        return "failed"
    return "passed"


def power_losses(journal: dict | None) -> dict | None:
    """What the run's power faults (method and rollbacks) did to unsynced data: one row per power
    loss (marker, zones, when, the target's `unsynced_dropped` report or None when the target
    cannot drop page caches, e.g. Kubernetes) and the totals. None: the run cut no power."""
    rows = []
    for r in ((journal or {}).get("run") or []) + ((journal or {}).get("rollbacks") or []):
        out = r.get("output") if isinstance(r, dict) else None
        effect = out.get("effect") if isinstance(out, dict) else None
        if not isinstance(effect, dict) or not effect.get("drops_unsynced") or out.get("dry_run"):
            continue
        done = out.get("done") if isinstance(out.get("done"), dict) else {}
        dropped = done.get("unsynced_dropped")
        rows.append({"marker": effect.get("marker"), "zones": effect.get("zones") or [],
                     "start": r.get("start"), "unsynced_dropped": dropped})
    if not rows:
        return None
    reported = [x["unsynced_dropped"] for x in rows if isinstance(x["unsynced_dropped"], dict)]
    total = ({"bytes": sum(int(d.get("bytes", 0)) for d in reported),
              "files": sum(int(d.get("files", 0)) for d in reported)} if reported else None)
    return {"faults": rows, "unsynced_dropped": total}


def entry(name: str, file: str, experiment: dict, journal: dict | None, duration_s: float,
          verdict: dict | None = None, error: str | None = None) -> dict:
    """The summary.json entry of one experiment."""
    ts = (journal or {}).get("twinsite") or {}
    verdict = verdict if verdict is not None else ts.get("verdict")
    checks = evaluate_checks(experiment, verdict, journal)
    status = status_of(journal) if not error else "error"
    failed = failed_checks(journal, checks)
    if status != "passed" and not failed and journal:
        failed = list(ts.get("failed_tolerances") or [])
    return {
        "name": name,
        "file": file,
        "title": experiment.get("title"),
        "description": experiment.get("description"),
        "status": status,
        "deviated": bool((journal or {}).get("deviated")),
        "duration_s": round(duration_s, 1),
        "verdict": verdict,
        "checks": checks,
        "failed_checks": failed,
        "power_loss": power_losses(journal),
        "error": error,
    }
