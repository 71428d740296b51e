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
        with pytest.raises(LegatoError, match="cannot record instance states"):
            writer.close()
        with pytest.raises(LegatoError):  # and it stays an error
            writer.write([{"id": 1, "state": "failed"}])
