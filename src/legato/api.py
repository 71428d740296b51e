"""The Python API: everything the ``legato`` command does, callable from Python.

    from legato import api
    study = api.prepare("study.yaml", pgen="gen.py", pargs=["CSV:params.csv"])
    outcome = api.execute(study.root, jobs=8)
    print(outcome.summary())

A facade only: each call is made where its work is done — ``prepare`` (study folders),
``launch`` (running, resuming and cancelling a study), ``campaign.control`` (batch campaigns:
starting, resuming, cancelling, results and archives).
"""
from __future__ import annotations

import os
from pathlib import Path

from legato.campaign.control import (
    archive_get,
    archive_list,
    batch,
    cancel_campaign,
    is_campaign,
    resume_batch,
)
from legato.launch import ClusterOptions, execute
from legato.launch import cancel as cancel_study
from legato.prepare import PreparedStudy, prepare
from legato.validate import Report, validate

__all__ = ["ClusterOptions", "PreparedStudy", "Report", "archive_get", "archive_list", "batch", "cancel", "execute",
           "export_results", "harvest", "prepare", "report", "resume_batch", "show_results", "validate"]


def harvest(folder: str | os.PathLike, results: list[str], url: str | None = None, success: list[str] = (),
            name: str | None = None) -> tuple[int, int]:
    """Harvest a legato or Maestro study folder into a results table; (rows written, failed rows)."""
    from legato.campaign.study_harvest import harvest_study

    return harvest_study(Path(folder), results, url, success, name)


def cancel(root: str | os.PathLike, wait: float = 60.0) -> str:
    """Stop the conductor of a study, or the driver of a campaign; running instances are terminated and recorded."""
    root = Path(root).absolute()
    return cancel_campaign(root, wait) if is_campaign(root) else cancel_study(root, wait)


def export_results(folder: str | os.PathLike, path: str, fmt: str, failed: bool = False) -> int:
    """Write a campaign's results (or a study's instances) as csv, json or parquet to ``path`` (``-``: stdout)."""
    from legato.report.tables import results, write_rows

    with results(folder, failed) as (kinds, pages):
        return write_rows(kinds, pages, path, fmt)


def show_results(folder: str | os.PathLike, failed: bool = False) -> int:
    """Print a campaign's results (or a study's instances) as a table on the terminal; returns the row count."""
    import sys

    from legato.report.tables import results, show_rows

    with results(folder, failed) as (kinds, pages):
        return show_rows(kinds, pages, sys.stdout, Path(folder).absolute().name)


def report(folder: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Write the self-contained HTML report of a campaign or study folder; returns its path."""
    from legato.report.page import write_report

    root = Path(folder).absolute()
    return write_report(root, Path(out) if out else root / "report.html")
