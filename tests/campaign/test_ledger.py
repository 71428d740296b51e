"""The campaign ledger: SQLite errors of its writes (a full disk) are one-line errors; a new ledger appears whole."""
from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from legato.campaign.ledger import LEDGER, PARTIAL, Ledger, never_started, options_of
from legato.campaign.options import CampaignOptions
from legato.errors import LegatoError

OPTIONS = CampaignOptions(spec="s.yaml", batch_size=3, rows="params.csv")


def fill_up(ledger: Ledger) -> None:
    """SQLite's own page limit: every write that needs a new page fails as on a full disk (SQLITE_FULL)."""
    pages = ledger.db.execute("PRAGMA page_count").fetchone()[0]
    ledger.db.execute(f"PRAGMA max_page_count = {pages}")


def test_a_full_ledger_is_a_legato_error_naming_it(tmp_path: Path) -> None:
    Ledger.create(tmp_path, OPTIONS)
    ledger = Ledger(tmp_path)
    fill_up(ledger)
    with pytest.raises(LegatoError, match=r"campaign.db: cannot update the campaign ledger: database or disk is full"):
        for number in range(1, 500):
            ledger.add_batch(number, number * 3, 3, tmp_path / "work" / f"batch-{number:06d}")
            ledger.set(reason="x" * 1000 + str(number))
    ledger.close()


def test_a_full_ledger_inside_a_transaction_rolls_back(tmp_path: Path) -> None:
    Ledger.create(tmp_path, OPTIONS)
    ledger = Ledger(tmp_path)
    fill_up(ledger)
    with pytest.raises(LegatoError, match="database or disk is full"):
        with ledger.db:
            ledger.db.execute("BEGIN IMMEDIATE")
            ledger.db.executemany("INSERT INTO instances VALUES (1, 's', ?, '0', 'finished', NULL, 'w', NULL)",
                                  [(f"label-{i}" * 50,) for i in range(2000)])
    assert ledger.db.execute("SELECT count(*) FROM instances").fetchone()[0] == 0
    ledger.close()


def test_a_new_ledger_appears_whole_with_its_options(tmp_path: Path) -> None:
    Ledger.create(tmp_path, OPTIONS, name="demo", state="running")
    assert sorted(path.name for path in tmp_path.iterdir()) == [LEDGER]
    ledger = Ledger(tmp_path)
    assert options_of(ledger) == OPTIONS and ledger.get("name") == "demo"
    ledger.close()
    assert not never_started(tmp_path)


def test_a_folder_killed_while_its_ledger_was_made_never_started(tmp_path: Path) -> None:
    (tmp_path / PARTIAL).write_bytes(b"")
    (tmp_path / f"{PARTIAL}-wal").write_bytes(b"")
    assert never_started(tmp_path)
    (tmp_path / "other.txt").write_text("mine")
    assert not never_started(tmp_path)


def test_an_older_ledger_without_options_never_started(tmp_path: Path) -> None:
    Ledger(tmp_path, create=True).close()
    assert never_started(tmp_path)
    with sqlite3.connect(tmp_path / LEDGER) as db:
        db.execute("INSERT INTO batches (number, start, nrows, phase, study) VALUES (1, 0, 3, 'planned', 'w')")
    assert not never_started(tmp_path)
    ledger = Ledger(tmp_path)
    with pytest.raises(LegatoError, match="the campaign never started"):
        options_of(ledger)
    ledger.close()


def test_a_ledger_without_options_beside_other_files_is_not_ours_to_remove(tmp_path: Path) -> None:
    Ledger(tmp_path, create=True).close()
    (tmp_path / "results.csv").write_text("mine")
    assert not never_started(tmp_path)
