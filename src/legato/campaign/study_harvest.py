"""Harvesting any study folder (legato's or Maestro's), success rules, and keeping failed instances.

``legato harvest FOLDER`` writes the same ``results`` table a campaign does, one row per
instance, as batch 0 of a "campaign" named after the folder; writing replaces that batch's
rows, so harvesting twice adds nothing. A legato study is read from its store; a study
workspace made by Maestro from the ``status.csv`` its conductor keeps in the study root
(``Step Name``, ``Workspace``, ``State``, times, ``Params`` as ``NAME:VALUE;...``).

Success rules (``--success STEP:RULE``) judge a step's finished instances beyond their exit
code; an instance that breaks one becomes a failed row whose reason is the rule, so a campaign
retries it like any other failure:

- ``exists:FILE``: the file exists in the instance folder and is not empty;
- ``has:KEY``: the instance's results hold KEY;
- ``KEY<op>VALUE`` with op one of ``== != <= >= < >``: numbers compare as numbers, else as text.
"""
from __future__ import annotations

import csv
import json
import operator
import os
import re
import shutil
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable, Sequence

from legato.campaign.harvest import ResultSink, collect, instance_results, parse_result_options, to_number
from legato.campaign.rows import split_url
from legato.errors import LegatoError
from legato.store import DB_NAME, Store

MAESTRO_STATUS = "status.csv"
_SETTLE_SECONDS = 60
_COMPARE = re.compile(r"^([^=!<>]+?)\s*(==|!=|<=|>=|<|>)\s*(.*)$")
_OPERATORS: dict[str, Callable[[object, object], bool]] = {
    "==": operator.eq, "!=": operator.ne, "<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt}
_MAESTRO_STATES = {"FINISHED": "finished", "FAILED": "failed", "TIMEDOUT": "timedout", "CANCELLED": "cancelled",
                   "KILLED": "cancelled", "RUNNING": "running", "PENDING": "pending", "INITIALIZED": "pending"}


@dataclass(frozen=True)
class Rule:
    """One ``--success STEP:RULE``: ``kind`` is exists, has or compare."""

    step: str
    text: str
    kind: str
    subject: str
    op: str = ""
    value: object = None

    def broken(self, folder: Path, results: dict[str, object]) -> str | None:
        """Why an instance breaks this rule, or None when it keeps it."""
        if self.kind == "exists":
            path = folder / self.subject
            return None if path.is_file() and path.stat().st_size > 0 else f"{self.subject} is missing or empty"
        if self.subject not in results:
            return f"no {self.subject!r} in its results"
        if self.kind == "compare" and not _holds(results[self.subject], self.op, self.value):
            return f"{self.subject} = {results[self.subject]!r}"
        return None


def parse_rules(entries: list[str], steps: set[str]) -> list[Rule]:
    """``STEP:RULE`` options checked before anything is read or written."""
    rules = []
    for entry in entries:
        step, _, text = entry.partition(":")
        if not step or not text:
            raise LegatoError(f"--success {entry!r}: expected STEP:RULE (exists:FILE, has:KEY or KEY<op>VALUE)")
        if step not in steps:
            raise LegatoError(f"--success {entry!r}: the study has no step {step!r} (steps: {', '.join(sorted(steps))})")
        kind, _, subject = text.partition(":")
        if kind in ("exists", "has") and subject:
            rules.append(Rule(step, text, kind, subject))
            continue
        match = _COMPARE.match(text)
        if not match or not match.group(3):
            raise LegatoError(f"--success {entry!r}: expected exists:FILE, has:KEY or KEY<op>VALUE with op in "
                              f"{' '.join(_OPERATORS)}")
        key, op, value = match.groups()
        rules.append(Rule(step, text, "compare", key.strip(), op, to_number(value.strip())))
    return rules


def _holds(found: object, op: str, wanted: object) -> bool:
    numeric = (int, float)
    if isinstance(found, numeric) and isinstance(wanted, numeric) and not isinstance(found, bool):
        return _OPERATORS[op](found, wanted)
    return _OPERATORS[op](str(found), str(wanted))


def judge(study: Path, rows: list[dict], members: list[tuple], rules: list[Rule]) -> tuple[list[dict], list[tuple]]:
    """Apply success rules to ``collect()``'s rows (and the ledger records alongside them, same order).

    A finished instance that breaks a rule of its step becomes ``failed`` with the rule as its
    reason; its parameters are kept in its ledger record so a retry batch can run it again.
    """
    by_step: dict[str, list[Rule]] = {}
    for rule in rules:
        by_step.setdefault(rule.step, []).append(rule)
    judged_members = []
    for row, member in zip(rows, members, strict=True):
        step_rules = by_step.get(row["step"])
        reason = _first_broken(step_rules, study / member[6], row) if step_rules and row["state"] == "finished" else None
        if reason:
            row.update(state="failed", reason=reason)
            member = (*member[:4], "failed", reason, member[6], _params_json(row))
        judged_members.append(member)
    return rows, judged_members


def _first_broken(rules, folder: Path, row: dict) -> str | None:
    for rule in rules:
        why = rule.broken(folder, row.get("results") or {})
        if why:
            return f"success rule {rule.step}:{rule.text} not met: {why}"
    return None


def _params_json(row: dict) -> str | None:
    return json.dumps(row["params"]) if row.get("index") is not None else None


def keep_failed(study: Path, members: list[tuple], dest: Path) -> list[Path]:
    """Copy the folders of instances that did not finish to ``dest`` (outside the batch workspace), for debugging."""
    kept = []
    for member in members:
        source = study / member[6]
        if member[4] != "finished" and source.is_dir():
            target = dest / member[6]
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(source, target, symlinks=True)
            kept.append(target)
    return kept


def harvest_study(folder: Path, results: list[str], url: str | None = None, success: Sequence[str] = (),
                  name: str | None = None) -> tuple[int, int]:
    """Harvest a legato or Maestro study folder into the results table; (rows written, failed rows).

    Options and the URL are checked, and every results file parsed, before the table is touched.
    """
    folder = folder.resolve()  # `$(WORKSPACE)/..` from a step of the study names it by its own name
    read = _read_legato if (folder / DB_NAME).is_file() else _read_maestro if (folder / MAESTRO_STATUS).is_file() else None
    if read is None:
        raise LegatoError(f"{folder}: not a study folder (no {DB_NAME} of legato, no {MAESTRO_STATUS} of Maestro)")
    url = url or f"sqlite:///{folder / 'results.db'}"
    split_url(url)
    rows, _ = read(folder, results, list(success))
    sink = ResultSink(url)
    try:
        sink.write(name or folder.name, 0, rows)
    finally:
        sink.close()
    return len(rows), sum(1 for row in rows if row["state"] != "finished")


def _read_legato(folder: Path, results: list[str], success: list[str]) -> tuple[list[dict], list[tuple]]:
    with Store.of_study(folder) as store:
        steps = {step["name"] for step in store.steps()}
    files, rules = parse_result_options(results, steps), parse_rules(success, steps)
    if os.environ.get("LEGATO_TAG"):
        _wait_recorded(folder, set(files) | {rule.step for rule in rules})
    return judge(folder, *collect(folder, 0, 0, files), rules)


def _wait_recorded(folder: Path, steps: set[str]) -> None:
    """Run as a step of a running study, wait until the harvested steps' ends are in its store.

    The conductor records states a fraction of a second after they happen (it writes them in
    batches), so a funnel step that harvests its parents can start before their ends are
    recorded; without waiting it would harvest them as still pending.
    """
    from legato.status import study_state

    deadline = time.monotonic() + _SETTLE_SECONDS
    marks = ",".join("?" * len(steps))
    while steps:
        with Store.of_study(folder) as store:
            if study_state(store.meta()) != "running" or not store.db.execute(
                    f"SELECT 1 FROM instances WHERE step IN ({marks}) AND state IN ('pending', 'running') LIMIT 1",
                    tuple(steps)).fetchone():
                return
        if time.monotonic() > deadline:
            raise LegatoError(f"{folder}: steps {', '.join(sorted(steps))} still have instances that did not end after "
                              f"{_SETTLE_SECONDS} s; a harvest step must depend on the steps it harvests")
        time.sleep(0.2)


def _read_maestro(folder: Path, results: list[str], success: list[str]) -> tuple[list[dict], list[tuple]]:
    """One row per line of Maestro's status.csv (a parameterized step has one line per combination)."""
    records = _maestro_status(folder)
    for record in records:
        record["Workspace"] = _relative(folder, record["Workspace"])
    steps = {Path(record["Workspace"]).parts[0] for record in records}
    files, rules = parse_result_options(results, steps), parse_rules(success, steps)
    rows, members = [], []
    for record in records:
        workspace = record["Workspace"]
        step = Path(workspace).parts[0]
        label = record["Step Name"][len(step) + 1:] if record["Step Name"] != step else ""
        state = _MAESTRO_STATES.get(record["State"].upper(), record["State"].lower())
        params = dict(pair.split(":", 1) for pair in record["Params"].split(";") if ":" in pair)
        found = instance_results(folder / workspace, files.get(step, ()))
        rows.append({"step": step, "label": label, "index": None, "state": state, "returncode": None,
                     "started": _maestro_time(record["Start Time"]), "ended": _maestro_time(record["End Time"]),
                     "reason": None if state == "finished" else f"Maestro state {record['State']}",
                     "params": params, "results": found})
        members.append((0, step, label, None, state, None, workspace, None))
    return judge(folder, rows, members, rules)


def _maestro_status(folder: Path) -> list[dict[str, str]]:
    path = folder / MAESTRO_STATUS
    wanted = {"Step Name", "Workspace", "State", "Start Time", "End Time", "Params"}
    try:
        with open(path, newline="", encoding="utf-8") as stream:
            reader = csv.DictReader(stream)
            missing = wanted - set(reader.fieldnames or ())
            if missing:
                raise LegatoError(f"{path}: not Maestro's status file (no {', '.join(sorted(missing))} column)")
            return [{key: value or "" for key, value in record.items()} for record in reader]
    except (OSError, csv.Error, UnicodeDecodeError) as exc:
        raise LegatoError(f"{path}: cannot read it: {getattr(exc, 'strerror', None) or exc}") from None


def _relative(folder: Path, workspace: str) -> str:
    """Maestro 1.2.1 writes workspaces relative to the study root; older versions wrote them absolute."""
    return os.path.relpath(workspace, folder) if os.path.isabs(workspace) else workspace


def _maestro_time(text: str) -> float | None:
    try:
        return datetime.strptime(text, "%Y-%m-%d %H:%M:%S").timestamp()
    except ValueError:
        return None
