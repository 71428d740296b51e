"""What rows a batch holds: read from the row source or the pgen, or an earlier batch's failed rows.

A pgen is handed START and NROWS, so existing pgen files batch with no change; a CSV or SQL
source is read a page at a time. A batch's rows are always found again from the ledger alone
(its start and length, or the batch it retries), so a batch planned before a crash is set up
again with exactly the same rows.
"""
from __future__ import annotations

import json
from pathlib import Path

from legato import parameters
from legato.campaign.ledger import Batch, Ledger
from legato.campaign.options import CampaignOptions
from legato.campaign.rows import RowSource, check_values, describe, open_rows
from legato.errors import LegatoError
from legato.spec import Spec
from legato.study import study_env


class BatchRows:
    """The campaign's rows, a batch at a time; one per thread that reads them (a row source is not shared)."""

    def __init__(self, options: CampaignOptions, spec: Spec, work: Path) -> None:
        self.options = options
        self.spec = spec
        self.work = work
        self._source: RowSource | None = None

    def close(self) -> None:
        if self._source:
            self._source.close()

    def count(self) -> int | None:
        """Rows the campaign will take: known up front for a CSV or SQL source or a product, not for a pgen."""
        if self.options.rows:
            total = self.source().count()
        elif self.spec.product and not self.options.pgen:
            total = parameters.spec_rows(self.spec)
        else:
            return None
        return min(total, self.options.max_rows) if self.options.max_rows is not None else total

    def wanted(self, start: int) -> int:
        """Rows the batch starting at ``start`` asks for: a whole batch, or what ``--max-rows`` leaves."""
        if self.options.max_rows is None:
            return self.options.batch_size
        return max(0, min(self.options.batch_size, self.options.max_rows - start))

    def table(self, start: int, nrows: int) -> parameters.ParameterTable:
        if nrows <= 0:
            return parameters.ParameterTable()
        if self.options.rows:
            table = self._rows_table(start, nrows)
        elif self.options.pgen:
            pargs = parameters.parse_pargs(self.options.pargs)
            pargs.update(START=str(start), NROWS=str(nrows))
            table = parameters.from_pgen(self.options.pgen, study_env(self.spec, self.work), pargs,
                                         self.spec.raw_variables)
        elif self.spec.product:  # the spec's own Cartesian product, a slice at a time
            table = parameters.from_spec(self.spec, start, nrows)
        else:
            raise LegatoError("a campaign needs rows: --rows SOURCE, --pgen FILE or the spec's legato.product")
        if table.length > nrows:
            raise LegatoError(f"{self.options.pgen}: gave {table.length} rows for START={start} NROWS={nrows}; "
                              "a campaign's pgen must return only the NROWS rows from row START on")
        return table

    def of(self, batch: Batch, ledger: Ledger) -> parameters.ParameterTable:
        """A planned batch's rows again (on resume); a retry batch's come from the ledger."""
        retry_of = ledger.retry_of(batch.number)
        return self.table(batch.start, batch.nrows) if retry_of is None else failed_table(ledger, retry_of)

    def source(self) -> RowSource:
        if self._source is None:
            assert self.options.rows is not None, "only a campaign over --rows has a row source"
            self._source = open_rows(self.options.rows, self.options.index)
        return self._source

    def _rows_table(self, start: int, nrows: int) -> parameters.ParameterTable:
        source = self.source()
        rows = source.read(start, nrows)
        if self.options.strict_values:  # again here: a database others write may have changed since the start
            for number, row in enumerate(rows, start + 1):
                check_values(row, f"row source {describe(self.options.rows or '')} row {number}")
        table = parameters.ParameterTable()
        for column in source.columns:
            if column != self.options.index:
                table.add(column.strip().upper(), [row[column] for row in rows])
        if self.options.index:
            table.index = [row[self.options.index] for row in rows]
        if not table.values:
            table.add("ROW", [str(start + i) for i in range(len(rows))])
        return table


def failed_rows(ledger: Ledger, number: int) -> dict[str, dict[str, str]]:
    """Row index -> parameters of every row of batch ``number`` that some step did not finish (once per row)."""
    rows: dict[str, dict[str, str]] = {}
    for index, params in ledger.db.execute(
            "SELECT row_index, params FROM instances WHERE batch = ? AND state NOT IN ('finished', 'retried', 'pending') "
            "AND params IS NOT NULL ORDER BY rowid", (number,)):
        rows.setdefault(index, json.loads(params))
    return rows


def failed_table(ledger: Ledger, number: int) -> parameters.ParameterTable:
    rows = failed_rows(ledger, number)
    table = parameters.ParameterTable()
    for name in next(iter(rows.values()), {}):
        table.add(name, [values[name] for values in rows.values()])
    table.index = list(rows)
    return table
