"""The shared folder of chunks: claims by rename, putting back, reading records a whole line at a time."""
from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

from legato import chunks
from legato.chunks import CLAIMED, QUEUE


def folder(tmp_path: Path, *pilots: str) -> Path:
    (tmp_path / QUEUE).mkdir()
    for pilot in pilots:
        (tmp_path / CLAIMED / pilot).mkdir(parents=True)
    return tmp_path


def chunk(*keys: int) -> dict:
    return {"tasks": [{"key": key} for key in keys], "interrupted": {}}


def test_oldest_chunk_first_and_half_written_ones_unseen(tmp_path):
    place = folder(tmp_path, "a")
    chunks.enqueue(place, "c-2", chunk(3))
    chunks.enqueue(place, "c-1", chunk(1, 2))
    (place / QUEUE / ".c-0.json.tmp").write_text('{"tasks": [')  # a driver killed while writing
    assert chunks.queued(place) == ["c-1", "c-2"]
    assert chunks.claim(place, "a") == ("c-1", chunk(1, 2))
    assert chunks.queued(place) == ["c-2"]
    assert list(chunks.claimed(place, "a")) == [("c-1", chunk(1, 2))]


def _claim_all(place: str, pilot: str, out) -> None:
    taken = []
    while (got := chunks.claim(Path(place), pilot)) is not None:
        taken.append(got[0])
    out.put(taken)


def test_racing_pilots_never_take_the_same_chunk(tmp_path):
    place = folder(tmp_path, "a", "b", "c")
    for n in range(300):
        chunks.enqueue(place, f"c-{n:04d}", chunk(n))
    out = multiprocessing.get_context("fork").Queue()
    racers = [multiprocessing.get_context("fork").Process(target=_claim_all, args=(str(place), name, out))
              for name in ("a", "b", "c")]
    for racer in racers:
        racer.start()
    taken = [name for _ in racers for name in out.get(timeout=60)]
    for racer in racers:
        racer.join()
    assert sorted(taken) == [f"c-{n:04d}" for n in range(300)]  # each exactly once
    assert sum(len(list(chunks.claimed(place, name))) for name in ("a", "b", "c")) == 300


def test_put_back_narrows_the_chunk_or_drops_it(tmp_path):
    place = folder(tmp_path, "a")
    chunks.enqueue(place, "c-1", chunk(1, 2, 3))
    chunks.enqueue(place, "c-2", chunk(4))
    chunks.claim(place, "a")
    chunks.claim(place, "a")
    chunks.put_back(place, "a", "c-1", chunk(3))
    chunks.put_back(place, "a", "c-2", chunk())
    assert chunks.queued(place) == ["c-1"] and list(chunks.claimed(place, "a")) == []
    assert chunks.read_json(place / QUEUE / "c-1.json") == chunk(3)


def test_records_are_read_a_whole_line_at_a_time(tmp_path):
    record = tmp_path / "p.record"
    assert chunks.read_lines(record) == ([], 0)  # not written yet
    record.write_text(json.dumps({"event": "claimed"}) + "\n" + '{"event": "sta')
    lines, offset = chunks.read_lines(record)
    assert lines == [{"event": "claimed"}] and offset == len(json.dumps({"event": "claimed"})) + 1
    with open(record, "a") as stream:
        stream.write('rted"}\n')
    assert chunks.read_lines(record, offset) == ([{"event": "started"}], record.stat().st_size)
