"""The study store's background writer: changes land, and a failing write is a user-facing error."""
from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from legato.errors import LegatoError
from legato.store import ChangeWriter, Store


def store_with(tmp_path: Path, count: int) -> Store:
    store = Store.of_study(tmp_path, create=True)
    with store.transaction():
        store.add_instances([(i, "s", f"P.{i}", i, f"s/P.{i}", None, "true", None, None, None) for i in range(1, count + 1)])
    return store


def test_batches_are_committed_by_close(tmp_path: Path) -> None:
    with store_with(tmp_path, 3) as store:
        writer = ChangeWriter(store.path)
        writer.write([{"id": 1, "state": "running", "pid": 7}, {"id": 2, "state": "finished", "returncode": 0}])
        writer.write([{"id": 1, "state": "finished", "returncode": 0}])
        writer.close()
        assert store.db.execute("SELECT id, state, pid FROM instances ORDER BY id").fetchall() == [
            (1, "finished", 7), (2, "finished", None), (3, "pending", None)]


def test_a_failed_write_is_a_legato_error(tmp_path: Path) -> None:
    with store_with(tmp_path, 1) as store:
        sqlite3.connect(store.path).execute("DROP TABLE instances")
        writer = ChangeWriter(store.path)
        writer.write([{"id": 1, "state": "finished"}])
        with pytest.raises(LegatoError, match="cannot write the study database: no such table: instances"):
            writer.close()
        with pytest.raises(LegatoError):  # and it stays an error
            writer.write([{"id": 1, "state": "failed"}])


def test_a_store_killed_before_its_tables_reads_as_set_up_not_finished(tmp_path: Path) -> None:
    """What a kill -9 left before this fix: a WAL-mode file without tables, then 'no such table: meta' forever."""
    path = tmp_path / "legato.db"
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.close()
    with Store(path) as store:
        assert store.meta() == {}  # no state: the set-up did not finish, a campaign prepares it again
        assert store.counts() == {} and list(store.records()) == []


def test_an_empty_file_left_by_a_kill_is_a_store_without_state(tmp_path: Path) -> None:
    (tmp_path / "legato.db").write_bytes(b"")
    with Store.of_study(tmp_path) as store:
        assert store.meta() == {}


def test_a_new_store_has_its_tables_before_wal(tmp_path: Path) -> None:
    """The tables are in the main file's first commit: the file never exists in WAL mode without them."""
    Store.of_study(tmp_path, create=True).close()
    db = sqlite3.connect(tmp_path / "legato.db")
    assert {"meta", "steps", "instances", "parameters"} <= {name for (name,) in db.execute("SELECT name FROM sqlite_master")}
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()


def test_a_full_disk_in_a_write_is_one_error_and_rolls_back(tmp_path: Path) -> None:
    with store_with(tmp_path, 3) as store:
        store.db.execute(f"PRAGMA max_page_count = {store.db.execute('PRAGMA page_count').fetchone()[0]}")
        with pytest.raises(LegatoError, match=r"legato.db: cannot write the study database: database or disk is full"):
            with store.transaction():
                store.add_instances([(i, "s", f"P.{i}" * 100, i, f"s/P.{i}", None, "true" * 100, None, None, None)
                                     for i in range(10, 3000)])
        assert store.db.execute("SELECT count(*) FROM instances").fetchone()[0] == 3
        with pytest.raises(LegatoError, match="database or disk is full"):
            store.set_meta(**{f"key{i}": "x" * 2000 for i in range(200)})
        assert not store.db.in_transaction
