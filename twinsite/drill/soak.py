"""The soak summary (pure: dicts in, dicts and text out): many drills, one table.

A soak runs `twinsite drill` N times (see `twinsite.drill.soakrun`). Each run leaves a drill
summary.json; `run_record` condenses one of them, with what the runner measured around it (wall
time, the machine's load average at start and end: the machine is shared, and load explains
failures), into a run record, and `summarize` turns the run records into the soak summary: per
experiment passes/runs, the spread (min/median/max) of `max_unavailable_s` and of the p99 latency
during the fault, and every failure with the tolerance that failed and its measured value.

An experiment a Ctrl-C cut short (`interrupted`) is not counted as a run: the soak stopped, the
experiment did not fail. A drill that wrote no summary at all (the lab did not start, bad usage)
is a failed run of the soak, listed under `drill_errors` — unless it was interrupted (exit 130).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from statistics import median

SPREAD_METRICS = ("max_unavailable_s", "p99_during_ms", "p99_before_ms")


def _metric(v: dict, m: str):
    """A verdict's number; p99_before_ms (the p99 of writes sent before the fault) says how
    loaded the lab was before anything broke."""
    if m == "p99_before_ms":
        return (v.get("latency_before") or {}).get("p99_ms")
    return v.get(m)


@dataclass(frozen=True)
class RunMeta:
    """What the runner measured around one drill."""
    run: int  # 1-based
    started: str  # ISO time, UTC
    wall_s: float
    load_start: tuple[float, float, float]  # os.getloadavg(): 1, 5, 15 min
    load_end: tuple[float, float, float]
    exit_code: int | None
    log_tail: str = ""  # the drill's last output lines, for a run without a summary
    # during the run: (s into the run, 1-min load average[, nats-server processes on the machine])
    load_samples: tuple[tuple, ...] = ()


def _failure(x: dict) -> dict:
    """What failed in one experiment: the tolerances (probe, measured value, allowed range)."""
    checks = [{"probe": c.get("probe"), "metric": c.get("metric"), "value": c.get("value"),
               "tolerance": c.get("tolerance_text")}
              for c in x.get("checks") or [] if c.get("ok") is False]
    named = {c["probe"] for c in checks}
    other = [n for n in x.get("failed_checks") or [] if n not in named]  # before/actions
    return {"status": x.get("status"), "checks": checks, "other": other, "error": x.get("error")}


def experiment_windows(started: str, journals: dict[str, dict]) -> dict[str, tuple[float, float]]:
    """Per experiment, (start, end) in seconds after the run started, from its journal's times."""
    t0 = datetime.fromisoformat(started)
    out = {}
    for name, j in journals.items():
        try:
            a, b = (datetime.fromisoformat(j[k]) for k in ("start", "end"))
        except (KeyError, TypeError, ValueError):
            continue
        out[name] = (round((a - t0).total_seconds(), 1), round((b - t0).total_seconds(), 1))
    return out


def _max_during(samples, window, i: int = 1) -> float | None:
    inside = [x[i] for x in samples if window and window[0] <= x[0] <= window[1] and len(x) > i]
    return max(inside) if inside else None


def run_record(meta: RunMeta, summary: dict | None,
               windows: dict[str, tuple[float, float]] | None = None) -> dict:
    """One run of the soak: its meta and, per experiment, status, the spread metrics, the highest
    1-min load average sampled while it ran (`windows`: see experiment_windows) and what failed.
    `summary` is the drill's summary.json (None when the drill wrote none)."""
    exps = {}
    for x in (summary or {}).get("experiments") or []:
        v = x.get("verdict") or {}
        rec = {"status": x.get("status"), "duration_s": x.get("duration_s"),
               **{m: _metric(v, m) for m in SPREAD_METRICS},
               "load_max": _max_during(meta.load_samples, (windows or {}).get(x.get("name"))),
               "nats_servers_max": _max_during(meta.load_samples,
                                               (windows or {}).get(x.get("name")), 2)}
        if x.get("status") not in ("passed", "interrupted"):
            rec["failure"] = _failure(x)
        exps[x.get("name")] = rec
    return {"run": meta.run, "started": meta.started, "wall_s": round(meta.wall_s, 1),
            "load_start": [round(v, 2) for v in meta.load_start],
            "load_end": [round(v, 2) for v in meta.load_end],
            "load_max": max([meta.load_start[0], meta.load_end[0]]
                            + [x[1] for x in meta.load_samples]),
            "nats_servers_max": _max_during(meta.load_samples, (0.0, float("inf")), 2),
            "load_samples": [list(p) for p in meta.load_samples],
            "exit_code": meta.exit_code, "drill_duration_s": (summary or {}).get("duration_s"),
            "summary": summary is not None, "experiments": exps,
            **({} if summary is not None else {"log_tail": meta.log_tail})}


def spread(values: list) -> dict | None:
    nums = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if not nums:
        return None
    return {"min": min(nums), "median": round(median(nums), 3), "max": max(nums), "n": len(nums)}


def summarize(runs: list[dict], planned: int, stack: str = "lab",
              interrupted: bool = False) -> dict:
    """The soak summary over run records (in run order)."""
    names: list[str] = []
    for r in runs:
        names += [n for n in r["experiments"] if n not in names]
    per = {}
    for name in names:
        seen = [(r["run"], r["experiments"][name]) for r in runs if name in r["experiments"]
                and r["experiments"][name]["status"] != "interrupted"]
        failures = [{"run": n, "load_max": x.get("load_max"),
                     "nats_servers_max": x.get("nats_servers_max"), **x["failure"]}
                    for n, x in seen if x["status"] != "passed"]
        by_tolerance: dict[str, int] = {}
        for f in failures:
            for key in [c["probe"] for c in f["checks"]] + f["other"] or [f["error"] or
                                                                          f["status"]]:
                by_tolerance[key] = by_tolerance.get(key, 0) + 1
        per[name] = {"runs": len(seen), "passes": sum(x["status"] == "passed" for _, x in seen),
                     **{m: spread([x.get(m) for _, x in seen]) for m in SPREAD_METRICS},
                     "load_max": spread([x.get("load_max") for _, x in seen]),
                     "failed_tolerances": by_tolerance, "failures": failures}
    loads = [v for r in runs for v in [r["load_start"][0], r["load_end"][0]]
             + [x[1] for x in r.get("load_samples") or []]]
    return {"stack": stack, "runs_planned": planned, "runs_done": len(runs),
            "interrupted": interrupted,
            "runs_clean": sum(r["summary"] and r["exit_code"] == 0 for r in runs),
            "drill_errors": [{"run": r["run"], "exit_code": r["exit_code"],
                              "log_tail": r.get("log_tail", "")}
                             for r in runs if not r["summary"] and r["exit_code"] != 130],
            "wall_s": spread([r["wall_s"] for r in runs]),
            "load_1min": spread(loads), "experiments": per, "runs": runs}


def _n(v, digits: int = 1) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _sp(s: dict | None, digits: int = 1) -> str:
    return "–" if not s else f"{_n(s['min'], digits)} / {_n(s['median'], digits)} / " \
                             f"{_n(s['max'], digits)}"


def markdown(soak: dict) -> str:
    """soak.md: the experiment table, the run table, then every failure."""
    head = (f"# Soak: {soak['runs_done']} of {soak['runs_planned']} drills"
            f"{' (interrupted)' if soak['interrupted'] else ''}, stack {soak['stack']}\n\n"
            f"Clean runs (every experiment passed): {soak['runs_clean']}/{soak['runs_done']}; "
            f"drill wall time min/median/max {_sp(soak['wall_s'], 0)} s; "
            f"1-min load average (sampled every 5 s) {_sp(soak['load_1min'])}.\n")
    lines = [head, "| experiment | passed/runs | unavailable s (min / median / max) | "
             "p99 during fault ms (min / median / max) | p99 before the fault ms (min / median "
             "/ max) | load during it (max per run: min / median / max) | failed tolerances |",
             "|---|---|---|---|---|---|---|"]
    for name, e in soak["experiments"].items():
        tols = ", ".join(f"{k} ×{v}" for k, v in e["failed_tolerances"].items()) or "–"
        lines.append(f"| {name} | {e['passes']}/{e['runs']} | {_sp(e['max_unavailable_s'])} | "
                     f"{_sp(e['p99_during_ms'], 0)} | {_sp(e.get('p99_before_ms'), 0)} | "
                     f"{_sp(e.get('load_max'))} | {tols} |")
    lines += ["", "| run | started (UTC) | wall s | load start (1/5/15 min) | load end | "
              "load max (1 min) | nats-servers on the machine (max; 7 are ours) | exit | failed |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in soak["runs"]:
        bad = [n if x["status"] != "interrupted" else f"{n} (interrupted)"
               for n, x in r["experiments"].items() if x["status"] != "passed"]
        lines.append(f"| {r['run']:02d} | {r['started']} | {r['wall_s']:.0f} | "
                     f"{' / '.join(f'{v:.1f}' for v in r['load_start'])} | "
                     f"{' / '.join(f'{v:.1f}' for v in r['load_end'])} | "
                     f"{r['load_max']:.1f} | {_n(r.get('nats_servers_max'), 0)} | "
                     f"{r['exit_code']} | "
                     f"{', '.join(bad) or ('no summary' if not r['summary'] else '–')} |")
    lines += ["", "## Failures", ""]
    for name, e in soak["experiments"].items():
        for f in e["failures"]:
            what = "; ".join(f"{c['probe']}: measured {c['value']} (allowed {c['tolerance']})"
                             for c in f["checks"])
            extra = "; ".join(f["other"] + ([f["error"]] if f["error"] else []))
            load = f" (load up to {f['load_max']:.1f}" if f.get("load_max") is not None else ""
            if load and f.get("nats_servers_max") is not None:
                load += f", {f['nats_servers_max']} nats-servers on the machine"
            load += ")" if load else ""
            lines.append(f"- run {f['run']:02d} {name} {f['status']}{load}: "
                         f"{'; '.join(p for p in (what, extra) if p) or '(no check named)'}")
    for d in soak["drill_errors"]:
        lines.append(f"- run {d['run']:02d}: the drill wrote no summary (exit {d['exit_code']}): "
                     f"{d['log_tail'].strip().splitlines()[-1] if d['log_tail'].strip() else ''}")
    if lines[-1] == "":
        lines.append("none")
    return "\n".join(lines) + "\n"
