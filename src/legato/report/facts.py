"""What a report says, gathered in one pass over the results: counts, times, failures, numeric columns.

Everything is reduced here (server-side) so that the page stays small however many rows there
are: times and numeric columns go into compact arrays, failures into counts per reason with a
few examples each.
"""
from __future__ import annotations

import json
import tarfile
from array import array
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from legato.campaign.harvest import FLOAT, INT
from legato.campaign.ledger import LEDGER, Ledger
from legato.store import Store

EXAMPLES = 3
"""Failed rows shown per reason."""
REASONS = 12
"""Failure reasons listed (the most frequent)."""
NUMERIC = 6
"""Result columns charted; parameters charted against each."""
STDERR_LINES = 8
_DONE = {"finished"}


@dataclass
class Failure:
    """A failed row: where it came from and why."""

    index: Any
    step: str
    label: str
    batch: int | None
    returncode: int | None
    params: dict[str, Any]
    stderr: str = ""


@dataclass
class Facts:
    """Everything the page shows, already reduced."""

    name: str
    kind: str  # "campaign" or "study"
    state: str | None
    rows: int = 0
    failed: int = 0
    total: int | None = None
    started: array = field(default_factory=lambda: array("d"))
    ended: array = field(default_factory=lambda: array("d"))
    reasons: Counter = field(default_factory=Counter)
    examples: dict[str, list[Failure]] = field(default_factory=dict)
    parameters: dict[str, array] = field(default_factory=dict)
    results: dict[str, array] = field(default_factory=dict)
    batches: list[dict[str, Any]] = field(default_factory=list)
    high_water: dict[str, int] = field(default_factory=dict)


def gather(root: Path) -> Facts:
    """Read a campaign or study folder (running or done: what is committed so far) into ``Facts``."""
    from legato.report.tables import results

    facts = _campaign_facts(root) if (root / LEDGER).is_file() else _study_facts(root)
    with results(root) as (kinds, pages):
        roles, index = _roles(root, kinds)
        _read_rows(facts, kinds, pages, roles, index)
    _attach_stderr(root, facts)
    return facts


def _campaign_facts(root: Path) -> Facts:
    ledger = Ledger(root)
    try:
        facts = Facts(ledger.get("name") or root.name, "campaign", ledger.get("state"), total=ledger.get("total_rows"))
        facts.high_water = ledger.get("high_water") or {}
        columns = ("number", "nrows", "phase", "started", "ended", "archive_bytes", "retry_of", "failed_rows")
        facts.batches = [dict(zip(columns, row)) for row in ledger.db.execute(
            f"SELECT {', '.join(columns)} FROM batches ORDER BY number")]
    finally:
        ledger.close()
    return facts


def _study_facts(root: Path) -> Facts:
    with Store.of_study(root) as store:
        meta = store.meta()
        total = store.db.execute("SELECT count(*) FROM instances").fetchone()[0]
    return Facts(meta.get("name") or root.name, "study", meta.get("state"), total=total)


def _roles(root: Path, kinds: dict[str, int]) -> tuple[dict[str, str], str | None]:
    """Column -> parameter/result (from the results table's own record, or a study's parameter columns), and the index column."""
    if (root / LEDGER).is_file():
        from legato.campaign.control import results_sink

        sink = results_sink(root)
        try:
            return sink.roles(), sink.index
        finally:
            sink.close()
    names = list(kinds)
    return {name: "parameter" for name in names[names.index("label") + 1:names.index("state")]}, None


def _read_rows(facts: Facts, kinds: dict[str, int], pages, roles: dict[str, str], index: str | None) -> None:
    at = {name: position for position, name in enumerate(kinds)}
    numeric = {name: kind for name, kind in kinds.items() if kind in (INT, FLOAT) and name in roles}
    charted = [name for name in numeric if roles[name] == "result"][:NUMERIC]
    charted += [name for name in numeric if roles[name] == "parameter"][:NUMERIC]
    for name in charted:
        (facts.results if roles[name] == "result" else facts.parameters)[name] = array("d")
    for page in pages:
        for row in page:
            facts.rows += 1
            facts.started.append(_epoch(row[at["started"]]))
            facts.ended.append(_epoch(row[at["ended"]]))
            for name in charted:
                value = row[at[name]]
                (facts.results if roles[name] == "result" else facts.parameters)[name].append(
                    float(value) if isinstance(value, (int, float)) else float("nan"))
            if row[at["state"]] not in _DONE:
                _failure(facts, row, at, index, roles)


def _failure(facts: Facts, row, at: dict[str, int], index: str | None, roles: dict[str, str]) -> None:
    facts.failed += 1
    reason = row[at["reason"]] or row[at["state"]]
    facts.reasons[reason] += 1
    examples = facts.examples.setdefault(reason, [])
    if len(examples) < EXAMPLES:
        examples.append(Failure(
            row[at[index]] if index in at else None, row[at["step"]], row[at["label"]],
            row[at["batch"]] if "batch" in at else None, row[at["returncode"]],
            {name: row[at[name]] for name, role in roles.items() if role == "parameter" and name in at}))


def _epoch(value: Any) -> float:
    if value is None or value == "":
        return float("nan")
    if isinstance(value, (int, float)):
        return float(value)
    return datetime.fromisoformat(value).timestamp()


def _attach_stderr(root: Path, facts: Facts) -> None:
    """The last lines of each example's stderr: from its folder if still there, else from its batch's archive."""
    shown = [failure for reason, _ in facts.reasons.most_common(REASONS) for failure in facts.examples[reason]]
    for failure in shown:
        failure.stderr = _stderr(root, facts.kind, failure)


def _stderr(root: Path, kind: str, failure: Failure) -> str:
    name = f"{failure.step}.err"
    if kind == "study":
        with Store.of_study(root) as store:
            found = store.db.execute("SELECT workspace FROM instances WHERE step = ? AND label = ?",
                                     (failure.step, failure.label)).fetchone()
        return _tail((root / found[0] / name).read_bytes()) if found and (root / found[0] / name).is_file() else ""
    ledger = Ledger(root)
    try:
        found = ledger.db.execute(
            "SELECT i.workspace, b.study, b.archive FROM instances i JOIN batches b ON b.number = i.batch "
            "WHERE i.batch = ? AND i.step = ? AND i.label = ?", (failure.batch, failure.step, failure.label)).fetchone()
    finally:
        ledger.close()
    if not found:
        return ""
    workspace, study, archive = found
    path = Path(study) / workspace / name
    if path.is_file():
        return _tail(path.read_bytes())
    return _from_archive(archive, f"{workspace}/{name}") if archive and Path(archive).is_file() else ""


def _from_archive(archive: str, member: str) -> str:
    """One small file out of a batch archive (tar.gz or tar.zst), read in memory."""
    import zstandard

    with open(archive, "rb") as raw:
        stream = zstandard.ZstdDecompressor().stream_reader(raw) if archive.endswith(".zst") else raw
        with tarfile.open(fileobj=stream, mode="r|*") as tar:
            for entry in tar:
                if entry.name == member and entry.isfile():
                    handle = tar.extractfile(entry)
                    return _tail(handle.read()) if handle else ""
    return ""


def _tail(data: bytes) -> str:
    return "\n".join(data.decode("utf-8", "replace").rstrip().splitlines()[-STDERR_LINES:])


def describe(values: dict[str, Any]) -> str:
    return json.dumps(values, default=str)
