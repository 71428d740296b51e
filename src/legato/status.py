"""``legato status``: what a study's store says, as a table, JSON, a listing or Maestro's status.csv.

Counts come from one GROUP BY over the (step, state) index, so the answer takes well under a
second even for a million instances; listings stream rows instead of loading them.
"""
from __future__ import annotations

import csv
import json
import os
import sys
import time
from functools import lru_cache
from pathlib import Path
from typing import Iterable, TextIO

from legato.store import STATES, Store

MAESTRO_COLUMNS = (
    "Step Name", "Job ID", "Workspace", "State", "Run Time", "Elapsed Time", "Start Time",
    "Submit Time", "End Time", "Number Restarts", "Params",
)
_MAESTRO_STATE = {
    "pending": "INITIALIZED", "running": "RUNNING", "finished": "FINISHED", "failed": "FAILED",
    "timedout": "TIMEDOUT", "cancelled": "CANCELLED", "skipped": "FAILED",
}


def show(folder: str, *, states: Iterable[str] = (), steps: Iterable[str] = (), as_json: bool = False,
         as_csv: bool = False, limit: int | None = None, stream: TextIO | None = None) -> None:
    stream = stream or sys.stdout
    if (Path(folder) / "campaign.db").is_file():
        if as_csv:
            from legato.errors import LegatoError

            raise LegatoError(f"--csv is for study folders; a campaign's results: legato results {folder} --csv FILE")
        if states or steps:
            _campaign_list(Path(folder), list(states), list(steps), as_json, limit, stream)
        else:
            _campaign(Path(folder), as_json, stream)
        return
    with Store.of_study(folder) as store:
        if as_csv:
            write_status_csv(store, stream)
        elif states or steps:
            _list(store, list(states), list(steps), as_json, limit, stream)
        else:
            _summary(store, Path(folder), as_json, stream)


def _summary(store: Store, folder: Path, as_json: bool, stream: TextIO) -> None:
    meta = store.meta()
    counts = store.counts()
    order = [step["name"] for step in store.steps()]
    current = study_state(meta)
    if as_json:
        json.dump({"study": meta.get("name"), "folder": str(folder.absolute()), "state": current,
                   "steps": {name: counts.get(name, {}) for name in order}}, stream, indent=2)
        stream.write("\n")
        return
    shown = [state for state in STATES if any(state in counts.get(name, {}) for name in order)]
    rows = [[name, *(str(counts.get(name, {}).get(state, 0)) for state in shown)] for name in order]
    totals = ["total", *(str(sum(counts.get(name, {}).get(state, 0) for name in order)) for state in shown)]
    hint = f"; continue with: legato run --resume {folder}" if current in ("interrupted", "cancelled") else ""
    stream.write(f"{meta.get('name')}: {current}{hint}  ({folder})\n")
    _table(["step", *shown], rows + [totals], stream)


def study_state(meta: dict) -> str | None:
    """The recorded state, except that a study whose conductor died (kill -9, a reboot) is 'interrupted'.

    Only a conductor on this host can be checked; elsewhere (a shared file system) the record stands.
    """
    import socket

    state = meta.get("state")
    if state == "running" and meta.get("conductor_host") == socket.gethostname() and meta.get("conductor_pid"):
        if not _alive(meta["conductor_pid"]):
            return "interrupted"
    return state


def _table(header: list[str], rows: list[list[str]], stream: TextIO) -> None:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        cells = [row[0].ljust(widths[0])] + [cell.rjust(width) for cell, width in zip(row[1:], widths[1:])]
        stream.write("  ".join(cells).rstrip() + "\n")


def _check_states(states: list[str], known: Iterable[str]) -> None:
    unknown = [state for state in states if state not in known]
    if unknown:
        from legato.errors import LegatoError

        raise LegatoError(f"--state {unknown[0]!r}: expected one of {', '.join(known)}")


def _list(store: Store, states: list[str], steps: list[str], as_json: bool, limit: int | None, stream: TextIO) -> None:
    _check_states(states, STATES)
    records = store.select(states=states, steps=steps, limit=limit)
    if as_json:
        stream.write("[\n")
        for i, record in enumerate(records):
            stream.write((",\n" if i else "") + json.dumps(record))
        stream.write("\n]\n")
        return
    for record in records:
        rc = "" if record["returncode"] is None else f" rc={record['returncode']}"
        reason = f"  ({record['reason']})" if record["reason"] else ""
        job = f" job={record['jobid']}" if record["jobid"] else ""
        stream.write(f"{record['state']:<9} {record['step']}/{record['label'] or '-'}{rc}{job}  {record['workspace']}{reason}\n")


def write_status_csv(store: Store, stream: TextIO) -> None:
    """Maestro's status.csv columns (properly quoted), for scripts written against Maestro.

    Written after every run, so it must not add a noticeable share to a run of trivial
    instances: one query, and times formatted once per distinct second.
    """
    writer = csv.writer(stream)
    writer.writerow(MAESTRO_COLUMNS)
    rows = store.db.execute(
        "SELECT step, label, jobid, pid, workspace, state, attempts, started, ended, params FROM instances ORDER BY id")
    stamp, duration = lru_cache(maxsize=4096)(_stamp), lru_cache(maxsize=4096)(_duration)
    for step, label, jobid, pid, workspace, state, attempts, started, ended, params in rows:
        took = duration(None if started is None or ended is None else int(ended - started))
        began = stamp(int(started or 0))
        writer.writerow((
            f"{step}_{label}" if label else step, jobid or pid or "--", workspace, _MAESTRO_STATE[state],
            took, took, began, began, stamp(int(ended or 0)), max(attempts - 1, 0),
            ";".join(f"{k}:{v}" for k, v in json.loads(params).items()) if params else "",
        ))


def _duration(seconds: int | None) -> str:
    if seconds is None:
        return "--"
    days, seconds = divmod(seconds, 86400)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    return f"{days}d:{hours:02d}h:{minutes:02d}m:{seconds:02d}s"


def _stamp(seconds: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds)) if seconds else "--"


_STAGE = {"planned": "setting up", "prepared": "prepared", "running": "running", "ran": "harvesting",
          "harvested": "archiving", "archived": "cleaning"}
"""What a batch not yet done is going through, from the last stage its ledger entry committed."""


def campaign_summary(folder: Path) -> dict:
    """Batches done/total, rows finished/failed, bytes archived, rate and ETA of a campaign.

    Rows are counted once: a retry batch reruns rows already counted, so it adds to
    ``retry_batches`` and to the bytes archived but not to the rows or batches done.
    """
    from legato.campaign.ledger import Ledger, options_of

    ledger = Ledger(folder)
    try:
        options = options_of(ledger)
        batches, rows, archived = ledger.progress()
        failed = ledger.failed_rows()
        retries, planned, first, last = ledger.db.execute(
            "SELECT sum(phase = 'cleaned' AND retry_of IS NOT NULL), sum(CASE WHEN retry_of IS NULL THEN nrows END), "
            "min(started), max(ended) FROM batches").fetchone()
        in_flight = [{"batch": number, "stage": _STAGE[phase], "rows": nrows} for number, phase, nrows in ledger.db.execute(
            "SELECT number, phase, nrows FROM batches WHERE phase != 'cleaned' ORDER BY number")]
        total_rows = ledger.get("total_rows") or options.max_rows
        if ledger.get("exhausted", False):
            total_rows = planned or 0  # every row has a batch: the total is known
        state, reason, pid = ledger.get("state"), ledger.get("reason"), ledger.get("pid")
    finally:
        ledger.close()
    if state in (None, "running") and not (pid and _alive(pid)):
        state = "interrupted"  # a killed driver leaves 'running', or nothing when killed as it started
    rate = rows / (last - first) if first and last and last > first else None
    total_batches = -(-total_rows // options.batch_size) if total_rows else None
    eta = max(total_rows - rows, 0) / rate if rate and total_rows else None
    return {
        "campaign": folder.name, "state": state, "reason": reason, "batches_done": batches,
        "batches_total": total_batches, "retry_batches": retries or 0, "rows_done": rows, "rows_total": total_rows,
        "finished": rows - failed, "failed": failed, "bytes_archived": archived, "rows_per_second": rate,
        "eta_seconds": eta, "in_flight": in_flight,
    }


def _alive(pid: int) -> bool:
    """Whether the process that last ran the campaign still exists: a killed one leaves the state 'running'."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, under another user
    return True


def _campaign(folder: Path, as_json: bool, stream: TextIO) -> None:
    from legato.campaign.diskguard import human_size

    info = campaign_summary(folder)
    if as_json:
        json.dump(info, stream, indent=2)
        stream.write("\n")
        return
    rate = f"{info['rows_per_second']:.1f} rows/s" if info["rows_per_second"] else "-- rows/s"
    eta = f"ETA {info['eta_seconds']:.0f} s" if info["eta_seconds"] is not None else "ETA --"
    state = info["state"] + (f" ({info['reason']})" if info["reason"] else "")
    if info["state"] in ("interrupted", "stopped"):
        state += f"; continue with: legato batch --resume {folder}"
    retries = f" (+{info['retry_batches']} retry)" if info["retry_batches"] else ""
    stream.write(
        f"{info['campaign']}: {state}\n"
        f"  batches  {info['batches_done']}/{_known(info['batches_total'])}{retries}\n"
        f"  rows     {info['rows_done']}/{_known(info['rows_total'])} ({info['finished']} finished, {info['failed']} failed)\n"
        f"  archived {human_size(info['bytes_archived'])}\n"
        f"  {rate}, {eta}\n"
    )
    if info["in_flight"]:
        stream.write("  in flight " + ", ".join(f"batch {b['batch']} {b['stage']}" for b in info["in_flight"]) + "\n")


def _campaign_list(folder: Path, states: list[str], steps: list[str], as_json: bool, limit: int | None,
                   stream: TextIO) -> None:
    """The harvested instances of a campaign in these states/steps, from its ledger: which rows failed, and why.

    Their workspaces are gone; the listing says which archive holds each (``legato archive get``).
    """
    from legato.campaign.ledger import Ledger

    _check_states(states, (*STATES, "retried"))
    where = [f"i.{column} IN ({', '.join('?' * len(values))})" for column, values in (("state", states), ("step", steps))
             if values]
    sql = ("SELECT i.batch, i.step, i.label, i.row_index, i.state, i.reason, b.archive FROM instances i "
           "JOIN batches b ON b.number = i.batch" + (f" WHERE {' AND '.join(where)}" if where else "") +
           " ORDER BY i.batch, i.rowid" + (f" LIMIT {int(limit)}" if limit is not None else ""))
    columns = ("batch", "step", "label", "row_index", "state", "reason", "archive")
    ledger = Ledger(folder)
    try:
        records = [dict(zip(columns, row)) for row in ledger.db.execute(sql, [*states, *steps])]
    finally:
        ledger.close()
    if as_json:
        json.dump(records, stream, indent=2)
        stream.write("\n")
        return
    for record in records:
        reason = f"  ({record['reason']})" if record["reason"] else ""
        stream.write(f"{record['state']:<9} batch {record['batch']} {record['step']}/{record['label'] or '-'} "
                     f"row {record['row_index'] or '-'}{reason}  {record['archive'] or 'not archived'}\n")


def _known(value: int | None) -> str:
    return "?" if value is None else str(value)
