"""A study's or campaign's results as one table, shown or written: rich on a terminal, CSV, JSON or Parquet.

A campaign's table is its harvested ``results`` table; a plain study folder gives one row per
instance (step, label, parameters, state, exit code, times, reason) from its store. Either way
the rows arrive a page at a time, so a table of millions of rows is never held whole.
"""
from __future__ import annotations

import csv
import json
import os
import sys
from collections import deque
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator, Sequence, TextIO

from legato.campaign.harvest import FLOAT, INT, PAGE, TEXT, cast_value, iso_time, to_number
from legato.errors import LegatoError
from legato.store import DB_NAME, Store

Pages = Iterator[Sequence[Sequence[Any]]]
FORMATS = ("csv", "json", "parquet")
SHOWN = 10
"""Rows shown at each end of a large table on a terminal."""
_STUDY_FIXED = {"step": TEXT, "label": TEXT, "state": TEXT, "returncode": INT, "started": TEXT, "ended": TEXT,
                "attempts": INT, "reason": TEXT}


@contextmanager
def results(folder: str | Path, failed: bool = False) -> Iterator[tuple[dict[str, int], Pages]]:
    """Column kinds and pages of rows of a campaign folder's results, or of a study folder's instances."""
    from legato.campaign.control import is_campaign, results_sink

    root = Path(folder).absolute()
    if is_campaign(root):
        sink = results_sink(root)
        try:
            with sink.read(root.name, failed) as table:
                yield table
        finally:
            sink.close()
    elif (root / DB_NAME).is_file():
        with Store.of_study(root) as store:
            yield study_table(store, failed)
    else:
        raise LegatoError(f"{root}: neither a study folder (no {DB_NAME}) nor a campaign folder")


def study_table(store: Store, failed: bool = False) -> tuple[dict[str, int], Pages]:
    """One row per instance in id order (steps in order, rows in parameter order); parameters as numbers where they are."""
    names: dict[str, None] = {}
    for (params,) in store.db.execute("SELECT DISTINCT params FROM instances WHERE params IS NOT NULL"):
        names.update(dict.fromkeys(json.loads(params)))
    kinds = {"step": TEXT, "label": TEXT, **{name: INT for name in names}}
    kinds.update({name: kind for name, kind in _STUDY_FIXED.items() if name not in kinds})
    where = " WHERE state != 'finished'" if failed else ""
    cursor = store.db.execute("SELECT step, label, params, state, returncode, started, ended, attempts, reason "
                              f"FROM instances{where} ORDER BY id")

    def rows() -> Iterator[list[Any]]:
        for step, label, params, state, rc, started, ended, attempts, reason in cursor:
            values = json.loads(params) if params else {}
            yield [step, label, *(to_number(str(values[n])) if n in values else None for n in names),
                   state, rc, iso_time(started), iso_time(ended), attempts, reason]

    return _widened(kinds, rows())


def _widened(kinds: dict[str, int], rows: Iterator[list[Any]]) -> tuple[dict[str, int], Pages]:
    """Kinds of the parameter columns from their values (a study's parameters are text in the store).

    The store is read once, into pages; a study's instances fit in memory (the conductor holds them too).
    """
    table = list(rows)
    names = list(kinds)
    for column, name in enumerate(names):
        if name not in _STUDY_FIXED and name not in ("step", "label"):
            kinds[name] = max((_kind(row[column]) for row in table), default=INT)
    return kinds, (table[start:start + PAGE] for start in range(0, len(table), PAGE))


def _kind(value: object) -> int:
    return INT if value is None or isinstance(value, int) else FLOAT if isinstance(value, float) else TEXT


def write_rows(kinds: dict[str, int], pages: Pages, path: str, fmt: str) -> int:
    """Write the rows to ``path`` (``-``: standard output) as csv, json or parquet; returns how many."""
    if fmt not in FORMATS:
        raise LegatoError(f"export format {fmt!r}: expected one of {', '.join(FORMATS)}")
    if fmt == "parquet":
        if path == "-":
            raise LegatoError("Parquet goes to a file, not standard output: --parquet FILE")
        return _write_parquet(path, kinds, pages)
    try:
        if path == "-":
            return _to_stdout(_WRITERS[fmt], kinds, pages)
        with open(path, "w", newline="", encoding="utf-8") as stream:
            return _WRITERS[fmt](stream, kinds, pages)
    except OSError as exc:
        raise LegatoError(f"cannot write {path}: {exc.strerror or exc}") from None


def _to_stdout(writer, kinds: dict[str, int], pages: Pages) -> int:
    """Write to standard output; a reader that stops early (``| head``) ends the output quietly, as with any Unix tool."""
    try:
        count = writer(sys.stdout, kinds, pages)
        sys.stdout.flush()
        return count
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's flush at exit must not fail again
        return 0


def _write_csv(stream: TextIO, kinds: dict[str, int], pages: Pages) -> int:
    writer = csv.writer(stream)
    writer.writerow(list(kinds))
    count = 0
    for page in pages:
        writer.writerows(["" if value is None else cast_value(value, kind) for value, kind in zip(row, kinds.values())]
                         for row in page)
        count += len(page)
    return count


def _write_json(stream: TextIO, kinds: dict[str, int], pages: Pages) -> int:
    """A JSON array of objects, written as it is read."""
    names = list(kinds)
    count = 0
    stream.write("[")
    for page in pages:
        for row in page:
            record = {name: cast_value(value, kind) for name, value, kind in zip(names, row, kinds.values())}
            stream.write(("," if count else "") + "\n" + json.dumps(record))
            count += 1
    stream.write("\n]\n")
    return count


_WRITERS = {"csv": _write_csv, "json": _write_json}


def _write_parquet(path: str, kinds: dict[str, int], pages: Pages) -> int:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise LegatoError("Parquet export needs pyarrow: pip install 'legato[parquet]'") from None
    arrow_types = {INT: pa.int64(), FLOAT: pa.float64(), TEXT: pa.string()}
    schema = pa.schema([(name, arrow_types[kind]) for name, kind in kinds.items()])
    count = 0
    try:
        with pq.ParquetWriter(path, schema) as writer:
            for page in pages:
                columns = [pa.array([cast_value(row[i], kind) for row in page], type=arrow_types[kind])
                           for i, kind in enumerate(kinds.values())]
                writer.write_table(pa.Table.from_arrays(columns, schema=schema))
                count += len(page)
    except OSError as exc:
        raise LegatoError(f"cannot write {path}: {exc.strerror or exc}") from None
    return count


def show_rows(kinds: dict[str, int], pages: Pages, stream: IO[str], title: str) -> int:
    """A rich table: every row of a small table; the first and last ``SHOWN`` rows and the count of a large one."""
    from rich.console import Console
    from rich.table import Table

    head: list[Sequence[Any]] = []
    tail: deque[Sequence[Any]] = deque(maxlen=SHOWN)
    count = 0
    for page in pages:
        for row in page:
            (head if len(head) < SHOWN else tail).append(row)
            count += 1
    table = Table(title=title, caption=f"{count} row{'s' if count != 1 else ''}")
    for name, kind in kinds.items():
        table.add_column(name, justify="left" if kind == TEXT else "right", no_wrap=True, overflow="ellipsis",
                         min_width=min(len(name), 8))
    for row in head:
        table.add_row(*_cells(row))
    if count > 2 * SHOWN:
        table.add_row(*(["…"] * len(kinds)), end_section=True)
    for row in tail:
        table.add_row(*_cells(row))
    Console(file=stream).print(table)
    return count


def _cells(row: Sequence[Any]) -> list[str]:
    return ["" if value is None else str(value) for value in row]
