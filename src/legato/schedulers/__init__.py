"""SLURM, Flux, LSF and PBS adapters behind one interface (``Scheduler``), chosen by ``batch.type``.

A conductor asks an adapter for a job script (``job_script``), hands the written file to
``submit``, asks ``poll`` for the states of all its jobs in one scheduler command, and ``cancel``s
them in one more. ``expand_launchers`` turns Maestro's ``$(LAUNCHER)`` tokens into the
scheduler's parallel launcher.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from legato.errors import LegatoError
from legato.schedulers.base import (
    JobRequest,
    JobState,
    Resources,
    Scheduler,
    parse_walltime,
)
from legato.schedulers.flux import Flux
from legato.schedulers.lsf import Lsf
from legato.schedulers.pbs import Pbs
from legato.schedulers.slurm import Slurm

ADAPTERS: dict[str, type[Scheduler]] = {cls.key: cls for cls in (Slurm, Flux, Lsf, Pbs)}

__all__ = ["ADAPTERS", "JobRequest", "JobState", "Resources", "Scheduler", "parse_walltime", "scheduler_for"]


def scheduler_for(batch: Mapping[str, Any]) -> Scheduler | None:
    """The adapter for a spec's batch block; None when steps run locally (no type, or ``local``)."""
    kind = str(batch.get("type") or "local").strip().lower()
    if kind == "local":
        return None
    if kind not in ADAPTERS:
        known = ", ".join(["local", *ADAPTERS])
        raise LegatoError(f"batch.type {batch.get('type')!r} is not a known scheduler (known: {known})")
    return ADAPTERS[kind](batch)
