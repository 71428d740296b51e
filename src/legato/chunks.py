"""The shared folder through which a driver hands chunks of instances to its pilots.

Only atomic renames move work around, so a shared (network) file system is enough and no
two pilots can take the same chunk::

    FOLDER/queue/NAME.json            chunks waiting for a pilot (written under a dot name, then renamed)
    FOLDER/claimed/PILOT/NAME.json    chunks PILOT took, by renaming them out of queue/
    FOLDER/records/PILOT.record       PILOT's events, one JSON line each, appended by PILOT alone
    FOLDER/pilots.json                the driver's registry of its pilots, for adoption and cancel
    FOLDER/stop                       while present, pilots with nothing to do leave at once

A chunk is ``{"tasks": [Task fields...], "interrupted": {key: times}}``. The records are the
truth about what ran: a chunk whose pilot died goes back to the queue holding only the tasks
that pilot's record does not show finished.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterator

QUEUE, CLAIMED, RECORDS, REGISTRY, STOP = "queue", "claimed", "records", "pilots.json", "stop"


def write_json(path: Path, data: dict | list) -> None:
    """Whole or not at all: written under a hidden name, then renamed over ``path``."""
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "w") as stream:
        json.dump(data, stream)
    os.replace(temporary, path)


def read_json(path: Path) -> dict:
    with open(path) as stream:
        return json.load(stream)


def enqueue(folder: Path, name: str, chunk: dict) -> None:
    write_json(folder / QUEUE / f"{name}.json", chunk)


def queued(folder: Path) -> list[str]:
    """Names of the waiting chunks, oldest first (names sort in the order they were made)."""
    try:
        return sorted(entry[:-5] for entry in os.listdir(folder / QUEUE) if entry.endswith(".json") and entry[0] != ".")
    except FileNotFoundError:
        return []


def claim(folder: Path, pilot: str) -> tuple[str, dict] | None:
    """Take the oldest waiting chunk for ``pilot``; None when there is none. A rename another
    pilot won first fails here with FileNotFoundError, and the next chunk is tried."""
    for name in queued(folder):
        target = folder / CLAIMED / pilot / f"{name}.json"
        try:
            os.rename(folder / QUEUE / f"{name}.json", target)
        except FileNotFoundError:
            continue
        return name, read_json(target)
    return None


def claimed(folder: Path, pilot: str) -> Iterator[tuple[str, dict]]:
    """The chunks ``pilot`` holds now."""
    place = folder / CLAIMED / pilot
    for entry in sorted(os.listdir(place)) if place.is_dir() else []:
        if entry.endswith(".json") and entry[0] != ".":
            yield entry[:-5], read_json(place / entry)


def put_back(folder: Path, pilot: str, name: str, chunk: dict) -> None:
    """Return a claimed chunk, narrowed to ``chunk``'s tasks, to the queue (or drop it when none are left).

    It is first rewritten where it lies, then renamed: a crash between the two leaves it
    claimed and whole, never in the queue half written.
    """
    held = folder / CLAIMED / pilot / f"{name}.json"
    if not chunk["tasks"]:
        held.unlink(missing_ok=True)
        return
    write_json(held, chunk)
    os.rename(held, folder / QUEUE / f"{name}.json")


def read_lines(path: Path, offset: int = 0) -> tuple[list[dict], int]:
    """The whole new lines of a record after ``offset``, and the offset after them: a pilot may be
    halfway through writing a line."""
    try:
        with open(path, "rb") as stream:
            stream.seek(offset)
            data = stream.read()
    except FileNotFoundError:
        return [], offset
    complete = data[: data.rfind(b"\n") + 1]
    return [json.loads(line) for line in complete.splitlines()], offset + len(complete)
