"""The drill report: one self-contained HTML page (opens offline, no external URL).

Per experiment a timeline (acknowledged writes/s, errors/s, p99 latency; fault windows shaded,
power-loss windows hatched), rendered with matplotlib and embedded as a base64 PNG; a table of
what each power loss dropped of data never fsynced; and a table of the checks: each tolerance of
the experiment with the measured value. Inputs are the drill's summary entries
and each experiment's history; nothing here talks to the lab.
"""

from __future__ import annotations

import base64
import html
import io
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

from .checker import timeline
from .faults import is_power_marker

# the verdict numbers shown in the per-experiment table, in reading order
VERDICT_ROWS = (
    ("attempted", "writes attempted (distinct ids)"),
    ("acked", "writes acknowledged"),
    ("failed", "writes certainly not written"),
    ("indeterminate", "writes with unknown outcome"),
    ("recovered", "unknown outcome, found stored"),
    ("lost", "acknowledged but missing"),
    ("duplicates", "stored twice"),
    ("unexpected", "stored but never sent"),
    ("order_violations", "stored out of order"),
    ("unread_rooms", "rooms not read back"),
    ("delivery_missing", "stored but not delivered to a subscriber"),
    ("max_unavailable_s", "longest write outage (s)"),
    ("rooms_stalled", "rooms whose writes stalled > 1 s"),
    ("room_unavailable_max_s", "longest write outage of one room (s)"),
    ("room_unavailable_p50_s", "median of the rooms' longest outages (s)"),
    ("p50_ms", "p50 latency (ms)"),
    ("p99_ms", "p99 latency (ms)"),
    ("p99_during_ms", "p99 latency during the fault (ms)"),
    ("max_ms", "max latency (ms)"),
    ("delivery_lag_p99_ms", "p99 delivery lag (ms)"),
)


def fault_windows(events: Iterable[dict]) -> list[tuple[str, float, float | None]]:
    """(name, start, stop) per fault in the history; stop None when it never ended."""
    open_: dict[str, float] = {}
    out: list[tuple[str, float, float | None]] = []
    for e in events:
        if e.get("type") != "fault":
            continue
        name, t = str(e.get("name")), float(e.get("time", 0.0))
        if e.get("f") == "start":
            open_.setdefault(name, t)
        elif e.get("f") == "stop" and name in open_:
            out.append((name, open_.pop(name), t))
    out.extend((name, t, None) for name, t in open_.items())
    return sorted(out, key=lambda w: w[1])


FAULT_SPAN = {"color": "#f0a030", "alpha": 0.25}
POWER_SPAN = {"facecolor": "#444", "alpha": 0.22, "hatch": "//", "edgecolor": "#222"}


def span_style(marker: str) -> dict:
    """Power off is dark and hatched, so it reads apart from link faults in the timeline."""
    return POWER_SPAN if is_power_marker(marker) else FAULT_SPAN


def timeline_png(events: list[dict], title: str = "", bucket_s: float = 1.0,
                 dpi: int = 80) -> bytes:
    """The timeline plot of one run as PNG bytes."""
    import matplotlib
    matplotlib.use("Agg")  # no display: render to memory only
    import matplotlib.pyplot as plt

    series = timeline(events, bucket_s=bucket_s)
    ts = [b["t"] + bucket_s / 2 for b in series]
    end = (series[-1]["t"] + bucket_s) if series else 1.0
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 3.6), sharex=True, dpi=dpi,
                                      gridspec_kw={"height_ratios": [3, 2]})
    top.plot(ts, [b["acked"] / bucket_s for b in series], color="#2a7d2a", lw=1.5,
             label="acknowledged writes/s")
    top.plot(ts, [b["errors"] / bucket_s for b in series], color="#c0392b", lw=1.2,
             label="failed or timed-out attempts/s")
    top.set_ylabel("per second")
    top.set_ylim(bottom=0)
    top.legend(loc="lower left", fontsize=7, framealpha=0.8)
    bottom.plot(ts, [b["p99_ms"] for b in series], color="#1f5fa8", lw=1.2,
                label="p99 latency of the writes acked in the second")
    bottom.set_ylabel("p99 ms")
    bottom.set_xlabel("seconds since the traffic started")
    bottom.set_ylim(bottom=0)
    bottom.legend(loc="upper left", fontsize=7, framealpha=0.8)
    for i, (name, start, stop) in enumerate(fault_windows(events)):
        power = is_power_marker(name)
        for ax in (top, bottom):
            ax.axvspan(start, end if stop is None else stop, label=None, **span_style(name))
        top.text(start, top.get_ylim()[1] * (0.95 - 0.1 * i),
                 f" {name}" + (" (power off)" if power else ""), fontsize=7, va="top",
                 color="#333" if power else "#8a5a00")
    for ax in (top, bottom):
        ax.set_xlim(0, end)
        ax.grid(alpha=0.3)
    if title:
        top.set_title(title, fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


# --- HTML -------------------------------------------------------------------------------------

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2em auto;max-width:62em;
color:#222;padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.pass{color:#1e7b1e;font-weight:bold}.fail{color:#b3261e;font-weight:bold}
.muted{color:#777}img{max-width:100%;border:1px solid #eee}
p.desc{font-size:.9em;color:#444}
"""


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if math.isinf(v):
            return "∞"
        return f"{v:.3f}".rstrip("0").rstrip(".") if v != int(v) else f"{int(v)}"
    return html.escape(str(v))


def _status_cell(status: str) -> str:
    ok = status == "passed"
    return f'<span class="{"pass" if ok else "fail"}">{html.escape(status.upper())}</span>'


def _bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB"):
        if n < 1024 or unit == "MiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def dropped_text(power: dict | None) -> str:
    """The summary cell: what the run's power losses dropped of data never fsynced."""
    if not power:
        return "no power loss"
    total = power.get("unsynced_dropped")
    if total is None:
        return "not simulated by the target"
    if not total["bytes"] and not total["files"]:
        return "nothing (all synced)"
    return f"{_bytes(total['bytes'])} in {total['files']} files"


def _power_section(power: dict | None) -> str:
    if not power:
        return ""
    rows = []
    for f in power["faults"]:
        d = f.get("unsynced_dropped")
        what = ("not simulated by the target" if d is None else
                f"{_bytes(int(d['bytes']))} ({int(d['bytes'])} bytes) in {int(d['files'])} files")
        rows.append(f"<tr><td>{html.escape(str(f.get('marker')))}</td>"
                    f"<td>{html.escape(', '.join(f.get('zones') or []))}</td>"
                    f"<td>{html.escape(str(f.get('start') or ''))}</td><td>{what}</td></tr>")
    return ("<p>Power was cut (hatched in the timeline). A power loss forgets every write the "
            "servers never fsynced; what it dropped:</p><table><tr><th>power loss</th><th>zones"
            "</th><th>at</th><th>unsynced data dropped</th></tr>" + "".join(rows) + "</table>")


def _checks_table(checks: list[dict]) -> str:
    if not checks:
        return ""
    rows = []
    for c in checks:
        ok = c.get("ok")
        mark = ('<span class="pass">met</span>' if ok else
                '<span class="fail">NOT MET</span>' if ok is False else '<span class="muted">–</span>')
        rows.append(f"<tr><td>{html.escape(c['probe'])}</td><td>{html.escape(c.get('metric') or '')}"
                    f"</td><td class=num>{_fmt(c.get('value'))}</td>"
                    f"<td>{html.escape(c.get('tolerance_text') or '')}</td><td>{mark}</td></tr>")
    return ("<table><tr><th>check</th><th>metric</th><th>value</th><th>tolerance</th>"
            "<th>result</th></tr>" + "".join(rows) + "</table>")


def _verdict_table(verdict: dict) -> str:
    rows = []
    for key, label in VERDICT_ROWS:
        if key in verdict:
            rows.append(f"<tr><td>{html.escape(label)}</td><td class=muted>{key}</td>"
                        f"<td class=num>{_fmt(verdict[key])}</td></tr>")
    for when in ("latency_before", "latency_during", "latency_after"):
        lat = verdict.get(when)
        if isinstance(lat, dict):
            rows.append(f"<tr><td>latency {when.split('_')[1]} the fault (p50 / p99 / max ms, n)"
                        f"</td><td class=muted>{when}</td><td class=num>{_fmt(lat.get('p50_ms'))} / "
                        f"{_fmt(lat.get('p99_ms'))} / {_fmt(lat.get('max_ms'))}, "
                        f"{_fmt(lat.get('count'))}</td></tr>")
    for key in ("lost_ids", "duplicate_ids", "unexpected_ids", "order_violation_ids"):
        if verdict.get(key):
            ids = ", ".join(map(str, verdict[key]))
            rows.append(f"<tr><td>{key.replace('_', ' ')} (first ones)</td><td class=muted>{key}"
                        f"</td><td>{html.escape(ids)}</td></tr>")
    return "<table><tr><th>verdict</th><th>field</th><th>value</th></tr>" + "".join(rows) + "</table>"


def summary_table(experiments: list[dict]) -> str:
    rows = []
    for x in experiments:
        v = x.get("verdict") or {}
        failed = "; ".join(x.get("failed_checks") or []) or ""
        rows.append(
            f'<tr><td><a href="#{html.escape(x["name"])}">{html.escape(x["name"])}</a></td>'
            f"<td>{_status_cell(x['status'])}</td><td class=num>{_fmt(x.get('duration_s'))}</td>"
            f"<td class=num>{_fmt(v.get('acked'))}</td><td class=num>{_fmt(v.get('failed'))}</td>"
            f"<td class=num>{_fmt(v.get('lost'))}</td>"
            f"<td class=num>{_fmt(v.get('duplicates'))}</td>"
            f"<td class=num>{_fmt(v.get('max_unavailable_s'))}</td>"
            f"<td class=num>{_fmt(v.get('p99_during_ms'))}</td>"
            f"<td>{html.escape(dropped_text(x.get('power_loss')))}</td>"
            f"<td>{html.escape(failed)}</td></tr>")
    return ("<table><tr><th>experiment</th><th>status</th><th>duration s</th><th>acked</th>"
            "<th>failed (client knows)</th><th>lost</th><th>duplicates</th><th>max unavailable s</th><th>p99 during ms</th>"
            "<th>unsynced data dropped</th><th>failed check</th></tr>" + "".join(rows) + "</table>")


def render_html(summary: dict, histories: dict[str, list[dict]]) -> str:
    """The whole page. `histories` maps an experiment name to its history events."""
    exps = summary.get("experiments", [])
    passed = sum(1 for x in exps if x.get("status") == "passed")
    ok = bool(exps) and passed == len(exps)
    when = summary.get("started") or datetime.now(timezone.utc).isoformat(timespec="seconds")
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        "<title>twinsite drill report</title>",
        f"<style>{CSS}</style></head><body>",
        "<h1>twinsite drill report</h1>",
        f"<p>Stack <b>{html.escape(str(summary.get('stack', '?')))}</b>, started "
        f"{html.escape(str(when))}, {_fmt(summary.get('duration_s'))} s in all. "
        f"Result: <span class={'pass' if ok else 'fail'}>{passed}/{len(exps)} experiments "
        f"passed</span>.</p>",
        "<p class=desc>Every experiment drives chat traffic through both sites, injects its fault, "
        "restores, reads every room back and judges the whole run: no acknowledged message lost, "
        "duplicated, invented or reordered, and writes unavailable no longer than the budget "
        "justified in the experiment.</p>",
        summary_table(exps),
    ]
    for x in exps:
        name = x["name"]
        parts.append(f'<h2 id="{html.escape(name)}">{html.escape(name)} — {_status_cell(x["status"])}'
                     "</h2>")
        if x.get("title"):
            parts.append(f"<p><b>{html.escape(x['title'])}</b></p>")
        if x.get("description"):
            parts.append(f"<p class=desc>{html.escape(x['description'])}</p>")
        if x.get("error"):
            parts.append(f"<p class=fail>{html.escape(x['error'])}</p>")
        events = histories.get(name) or []
        if events:
            png = timeline_png(events, title=name)
            parts.append(f'<p><img alt="timeline of {html.escape(name)}" src="{data_uri(png)}"></p>')
        else:
            parts.append("<p class=muted>no history recorded</p>")
        parts.append(_power_section(x.get("power_loss")))
        parts.append(_checks_table(x.get("checks") or []))
        if x.get("verdict"):
            parts.append(_verdict_table(x["verdict"]))
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(path: str | Path, summary: dict, histories: dict[str, list[dict]]) -> Path:
    path = Path(path)
    path.write_text(render_html(summary, histories), encoding="utf-8")
    return path
