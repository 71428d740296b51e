"""The HTML report: one self-contained page (inline CSS and SVG charts made with matplotlib, no scripts, no network).

Charts are drawn from reduced data (``facts``): a cumulative curve of a few hundred points,
histograms, and for large tables density plots whose pixels are embedded as one small image,
so the page stays well under a few megabytes at millions of rows.
"""
from __future__ import annotations

import html
import io
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from legato.campaign.diskguard import human_size
from legato.errors import LegatoError
from legato.report.facts import REASONS, Facts, describe, gather

CURVE_POINTS = 400
SCATTER_POINTS = 2000
"""Beyond this many points a scatter becomes a density plot (a raster inside the SVG)."""
_CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:70em;color:#222;padding:0 1em}
h1{margin-bottom:.2em} h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
.summary{display:grid;grid-template-columns:repeat(auto-fill,minmax(11em,1fr));gap:.6em}
.summary div{background:#f4f6f8;border-radius:.4em;padding:.5em .8em}
.summary b{display:block;font-size:1.3em}
.charts{display:flex;flex-wrap:wrap;gap:1em} figure{margin:0} figure svg{max-width:100%;height:auto}
table{border-collapse:collapse;margin:.5em 0} td,th{border:1px solid #ddd;padding:.2em .5em;text-align:left;vertical-align:top}
pre{background:#f8f8f8;margin:0;padding:.3em;max-width:50em;overflow-x:auto;font-size:.85em}
.failed{color:#b00020} .muted{color:#777}
"""


def write_report(root: Path, out: Path) -> Path:
    """Gather, draw and write the page; returns ``out``."""
    if not out.parent.is_dir():
        raise LegatoError(f"{out}: no folder {out.parent}")
    page = render(gather(root))
    partial = out.with_name(out.name + ".partial")
    try:
        partial.write_text(page, encoding="utf-8")
        os.replace(partial, out)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise LegatoError(f"cannot write {out}: {exc.strerror or exc}") from None
    return out


def render(facts: Facts) -> str:
    """The whole page as one string."""
    sections = [_summary(facts), _progress_charts(facts), _failures(facts), _numeric_charts(facts)]
    title = html.escape(f"{facts.name}: legato {facts.kind} report")
    made = time.strftime("%Y-%m-%d %H:%M:%S %z")
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{title}</title>"
            f"<style>{_CSS}</style></head><body><h1>{title}</h1><p class='muted'>made {made}; "
            f"state: {html.escape(str(facts.state))}</p>{''.join(sections)}</body></html>\n")


# -- summary -------------------------------------------------------------------------------------
def _summary(facts: Facts) -> str:
    ended = np.asarray(facts.ended)
    started = np.asarray(facts.started)
    first = _batch_times(facts, "started", min) or _finite(started, np.min)
    last = _batch_times(facts, "ended", max) or _finite(ended, np.max)
    wall = (last - first) if first is not None and last is not None else None
    cells = [("rows done", f"{facts.rows - facts.failed:,}"), ("rows failed", f"{facts.failed:,}"),
             ("rows total", "unknown" if facts.total is None else f"{facts.total:,}")]
    if facts.kind == "campaign":
        archived = sum(batch["archive_bytes"] or 0 for batch in facts.batches)
        cells += [("batches", f"{sum(b['phase'] == 'cleaned' for b in facts.batches)} done of {len(facts.batches)}"),
                  ("archives", human_size(archived))]
    cells += [("wall time", _duration(wall)), ("rows/s", f"{facts.rows / wall:,.1f}" if wall else "--")]
    if facts.high_water:
        cells += [("disk used, high water", human_size(facts.high_water.get("bytes", 0))),
                  ("inodes used, high water", f"{facts.high_water.get('inodes', 0):,}")]
    body = "".join(f"<div>{html.escape(label)}<b>{html.escape(value)}</b></div>" for label, value in cells)
    return f"<h2>Summary</h2><div class='summary' id='summary'>{body}</div>"


def _batch_times(facts: Facts, column: str, pick) -> float | None:
    values = [batch[column] for batch in facts.batches if batch[column] is not None]
    return pick(values) if values else None


def _finite(values: np.ndarray, reduce) -> float | None:
    values = values[np.isfinite(values)]
    return float(reduce(values)) if values.size else None


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "--"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


# -- charts --------------------------------------------------------------------------------------
def _progress_charts(facts: Facts) -> str:
    started, ended = np.asarray(facts.started), np.asarray(facts.ended)
    done = np.sort(ended[np.isfinite(ended)])
    charts = []
    if done.size:
        charts.append(_chart("rows finished over time", _cumulative, done))
    rates = [(b["number"], b["nrows"] / (b["ended"] - b["started"])) for b in facts.batches
             if b["ended"] and b["started"] and b["ended"] > b["started"]]
    if rates:
        charts.append(_chart("throughput per batch", _bars, rates))
    durations = ended - started
    durations = durations[np.isfinite(durations)]
    if durations.size:
        charts.append(_chart("instance durations", _histogram, durations, "seconds"))
    if facts.reasons:
        charts.append(_chart("failures by reason", _reason_bars, facts.reasons.most_common(REASONS)))
    return f"<h2>Progress</h2><div class='charts'>{''.join(charts) or '<p>nothing has run yet</p>'}</div>"


def _numeric_charts(facts: Facts) -> str:
    parts = []
    for name, values in facts.results.items():
        column = np.asarray(values)
        charts = [_chart(f"{name}: distribution", _histogram, column[np.isfinite(column)], name)]
        for parameter, xs in facts.parameters.items():
            charts.append(_chart(f"{name} against {parameter}", _scatter, (np.asarray(xs), column), (parameter, name)))
        parts.append(f"<h3>{html.escape(name)}</h3><div class='charts'>{''.join(charts)}</div>")
    if not parts:
        return ""
    return f"<h2>Results</h2>{''.join(parts)}"


def _chart(title: str, draw, data: Any, *labels: Any) -> str:
    """One matplotlib figure as inline SVG (text kept as text, so the page can be searched)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "legato", "font.size": 9}):
        figure, axes = plt.subplots(figsize=(5.2, 3.2), layout="constrained")
        axes.set_title(title)
        draw(axes, data, *labels)
        buffer = io.StringIO()
        figure.savefig(buffer, format="svg", dpi=90, metadata=dict.fromkeys(("Creator", "Date", "Format", "Type")))
        plt.close(figure)
    svg = buffer.getvalue()
    return f"<figure class='chart' data-title='{html.escape(title)}'>{svg[svg.index('<svg'):]}</figure>"


def _cumulative(axes, done: np.ndarray) -> None:
    step = max(1, done.size // CURVE_POINTS)
    times = np.append(done[::step], done[-1]) - done[0]
    counts = np.append(np.arange(1, done.size + 1)[::step], done.size)
    unit, scale = ("hours", 3600) if times[-1] > 7200 else ("minutes", 60) if times[-1] > 120 else ("seconds", 1)
    axes.step(times / scale, counts, where="post")
    axes.set_xlabel(f"{unit} since the first row finished")
    axes.set_ylabel("rows finished")


def _bars(axes, rates: list[tuple[int, float]]) -> None:
    axes.bar([str(number) for number, _ in rates], [rate for _, rate in rates])
    axes.set_xlabel("batch")
    axes.set_ylabel("rows/s")
    if len(rates) > 30:
        axes.set_xticks(axes.get_xticks()[:: len(rates) // 15])


def _histogram(axes, values: np.ndarray, label: str) -> None:
    if values.size:
        axes.hist(values, bins=min(50, max(5, int(np.sqrt(values.size)))))
    axes.set_xlabel(label)
    axes.set_ylabel("rows")


def _reason_bars(axes, reasons: list[tuple[str, int]]) -> None:
    names = [reason if len(reason) < 40 else reason[:37] + "..." for reason, _ in reasons][::-1]
    axes.barh(names, [count for _, count in reasons][::-1], color="#b00020")
    axes.set_xlabel("rows")


def _scatter(axes, data: tuple[np.ndarray, np.ndarray], labels: tuple[str, str]) -> None:
    xs, ys = data
    shown = np.isfinite(xs) & np.isfinite(ys)
    xs, ys = xs[shown], ys[shown]
    if xs.size > SCATTER_POINTS:
        axes.hexbin(xs, ys, gridsize=40, mincnt=1, cmap="viridis", rasterized=True)
    elif xs.size:
        axes.scatter(xs, ys, s=6, alpha=0.6)
    axes.set_xlabel(labels[0])
    axes.set_ylabel(labels[1])


# -- failures ------------------------------------------------------------------------------------
def _failures(facts: Facts) -> str:
    if not facts.reasons:
        return "<h2>Failures</h2><p id='failures'>no failed rows</p>"
    rows = []
    for reason, count in facts.reasons.most_common(REASONS):
        for number, failure in enumerate(facts.examples[reason]):
            lead = (f"<td rowspan='{len(facts.examples[reason])}' class='failed'>{html.escape(reason)}</td>"
                    f"<td rowspan='{len(facts.examples[reason])}'>{count:,}</td>") if number == 0 else ""
            rows.append(f"<tr>{lead}<td>{html.escape(str(failure.index if failure.index is not None else failure.label))}</td>"
                        f"<td>{html.escape(failure.step)}</td><td>{html.escape(describe(failure.params))}</td>"
                        f"<td>{'' if failure.returncode is None else failure.returncode}</td>"
                        f"<td><pre>{html.escape(failure.stderr)}</pre></td></tr>")
    more = len(facts.reasons) - REASONS
    note = f"<p class='muted'>{more} more reasons not shown</p>" if more > 0 else ""
    return ("<h2>Failures</h2><table id='failures'><tr><th>reason</th><th>rows</th><th>row</th><th>step</th>"
            f"<th>parameters</th><th>exit code</th><th>last lines of stderr</th></tr>{''.join(rows)}</table>{note}")
