"""Where a study and each of its instances live on disk.

Maestro puts every instance of a step side by side in ``<study>/<step>/<label>/``; with
10^5 instances that one folder is what makes ``ls`` and ``rm`` crawl. The ``tree`` layout
keeps Maestro's names while a step has at most ``fanout`` instances (so existing funnel
globs keep working) and beyond that nests instance folders in numbered buckets so that no
folder holds more than ``fanout`` instance folders. ``flat`` always reproduces Maestro.
Every step with instances gets a manifest listing their folders, which works in any layout.
"""
from __future__ import annotations

import hashlib
import re
import time
from pathlib import Path

from legato.errors import LegatoError

LAYOUTS = ("tree", "flat")
DEFAULT_FANOUT = 1000
MANIFEST = "instances.txt"
"""Per step, one instance workspace (absolute path) per line, in instance order."""

_UNSAFE = re.compile(r"[^-_.()A-Za-z0-9]")
_MAESTRO_UNSAFE = re.compile(r"[^-_.() A-Za-z0-9]")
_MAX_NAME = 200


def safe_label(label: str) -> str:
    """A folder name for a label: unchanged when already safe, otherwise cleaned and made unique.

    Characters outside Maestro's safe set, ``.``/``..``, over-long names and the manifest's own
    name get a short hash of the raw label appended, so two different labels never share a folder.
    """
    cleaned = _UNSAFE.sub("_", label.replace(" ", "_"))
    if cleaned == label and _usable(label):
        return label
    digest = hashlib.sha1(label.encode("utf-8", "surrogatepass")).hexdigest()[:10]
    return f"{cleaned.strip('.')[: _MAX_NAME - 11]}-{digest}"


def maestro_label(label: str) -> str:
    """Maestro's folder name for a label (its make_safe_path): unsafe characters dropped, spaces as ``_``."""
    return _MAESTRO_UNSAFE.sub("", label).replace(" ", "_")


def is_safe(text: str) -> bool:
    """Nothing in ``text`` that Maestro's or legato's folder names would change."""
    return not _UNSAFE.search(text)


def _usable(name: str) -> bool:
    return name not in ("", ".", "..", MANIFEST) and len(name.encode()) <= _MAX_NAME


def study_folder(output_path: str | None, name: str, out: str | None = None) -> Path:
    """``-o`` exactly, else ``<OUTPUT_PATH>/<name>_<YYYYmmdd-HHMMSS>`` (a suffix if that exists)."""
    if out:
        return Path(out).absolute()
    root = Path(output_path or ".").absolute()
    safe_name = _UNSAFE.sub("", name.replace(" ", "_"))  # Maestro drops what is unsafe in a path: no '/' escapes
    base = root / f"{safe_name}_{time.strftime('%Y%m%d-%H%M%S')}"
    folder, suffix = base, 1
    while folder.exists():
        folder = base.with_name(f"{base.name}_{suffix}")
        suffix += 1
    return folder


class StepLayout:
    """Relative instance paths of one step, given how many instances it has.

    The ``flat`` layout names folders as Maestro does (``TEST.{}`` -> ``TEST.``) except for
    the ``hashed`` labels: those whose Maestro name another label of the step already has, or
    that Maestro would turn into no usable name. They get ``safe_label``'s hashed name instead,
    so that two instances never share a folder.
    """

    def __init__(self, step: str, count: int, layout: str = "tree", fanout: int = DEFAULT_FANOUT,
                 labels: list[str] | None = None) -> None:
        if layout not in LAYOUTS:
            raise LegatoError(f"--layout {layout!r}: expected one of {', '.join(LAYOUTS)}")
        if fanout < 2:
            raise LegatoError(f"--fanout {fanout}: must be at least 2")
        self.step = safe_label(step)
        self.fanout = fanout
        self.levels = 0
        self.flat = layout == "flat"
        if layout == "tree":
            while fanout ** (self.levels + 1) < count:
                self.levels += 1
        self._width = len(str(fanout - 1))
        self.hashed = _clashing(labels or []) if self.flat else set()

    def path(self, index: int, label: str) -> str:
        """``step/label`` or ``step/0003/label``; a step without parameters lives in ``step`` itself."""
        if not label:
            return self.step
        buckets = [
            f"{(index // self.fanout ** level) % self.fanout:0{self._width}d}" for level in range(self.levels, 0, -1)
        ]
        return "/".join([self.step, *buckets, self.name(label)])

    def name(self, label: str) -> str:
        if self.flat and label not in self.hashed:
            name = maestro_label(label)
            if _usable(name):
                return name
        return safe_label(label)


def _clashing(labels: list[str]) -> set[str]:
    """Labels Maestro would change whose Maestro name is unusable or already another label's."""
    changed = [label for label in labels if maestro_label(label) != label]
    if not changed:
        return set()
    taken = {label for label in labels if _usable(label)} - set(changed)
    hashed = set()
    for label in changed:
        name = maestro_label(label)
        if name in taken or not _usable(name):
            hashed.add(label)
        else:
            taken.add(name)
    return hashed
