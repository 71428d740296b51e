"""Flux: ``#flux:`` directives read by ``flux batch``, ``flux jobs`` for states, ``flux cancel``.

Only the command-line tools are used (no Python bindings), so legato needs nothing from the
Flux installation but ``flux`` on PATH. When the batch block names an instance (``uri``, or
Maestro's documented ``flux_uri``), every command goes through ``flux proxy URI``, which is how
a workflow running outside an allocation reaches a Flux instance started inside one.

Job ids are kept as ``flux batch`` prints them (F58, "ƒ..."); where the locale cannot show "ƒ",
Flux prints an ASCII "f", so ids are compared with the prefix folded.
"""
from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

from legato.errors import LegatoError
from legato.schedulers.base import (
    JobRequest,
    JobState,
    Resources,
    Scheduler,
    quote,
    render_options,
)

STATES = {
    "DEPEND": JobState.PENDING, "PRIORITY": JobState.PENDING, "SCHED": JobState.PENDING,
    "PENDING": JobState.PENDING,
    "RUN": JobState.RUNNING, "CLEANUP": JobState.RUNNING, "RUNNING": JobState.RUNNING,
    "COMPLETED": JobState.COMPLETED, "FAILED": JobState.FAILED,
    "CANCELED": JobState.CANCELLED, "TIMEOUT": JobState.TIMEOUT,
}
"""``flux jobs {status}`` values: states of active jobs, results of inactive ones (older Flux
releases printed PENDING/RUNNING instead of the state names)."""

UNKNOWN_JOB = re.compile(r"(?i)(no such job|unknown job|invalid jobid|not found)")


def gpus_per_slot(res: Resources) -> int | None:
    """Flux counts GPUs per slot (task); the spec counts them per node, so spread them over the tasks."""
    if not res.gpus or not res.procs:
        return None
    return max(1, math.ceil(res.gpus * (res.nodes or 1) / res.procs))


def _fold(job_id: str) -> str:
    return "f" + job_id[1:] if job_id.startswith("ƒ") else job_id


class Flux(Scheduler):
    key = "flux"
    directive = "#flux:"

    def _flux(self, *words: str) -> list[str]:
        uri = self.batch.get("uri") or self.batch.get("flux_uri")
        return ["flux", "proxy", str(uri), "flux", *words] if uri else ["flux", *words]

    def launcher(self, nodes: int | None, procs: int | None, **run: Any) -> str:
        """``flux run``; batch ``args`` become ``-o key=value`` shell options, as in Maestro."""
        words = ["flux", "run"]
        if nodes:
            words += ["-N", str(nodes)]
        if procs:
            words += ["-n", str(procs)]
        for key, flag in (("cores per task", "-c"), ("gpus", "-g")):
            if run.get(key) not in (None, "", 0):
                words += [flag, str(run[key])]
        words += [f"-o {quote(f'{k}={v}')}" for k, v in (self.batch.get("args") or {}).items()]
        words += render_options(self.batch.get("launcher_args"))
        return " ".join(words)

    def directives(self, job: JobRequest) -> list[str]:
        """``-n`` counts slots (one per task, ``-c`` cores each); with only ``-N`` Flux gives whole nodes."""
        if job.array:
            raise LegatoError(f"job {job.name}: Flux has no job arrays; pack the tasks into one job instead")
        res = job.resources
        options = [f"--job-name={quote(job.name)}", f"--cwd={quote(job.workdir)}",
                   f"--output={quote(job.stdout)}", f"--error={quote(job.stderr)}"]
        counts = [("-N", res.nodes), ("-n", res.procs), ("-c", res.cores_per_task if res.procs else None),
                  ("-g", gpus_per_slot(res))]
        options += [f"{flag} {value}" for flag, value in counts if value]
        if res.seconds is not None:
            options.append(f"-t {res.seconds}s")
        if self.batch.get("queue"):
            options.append(f"-q {quote(self.batch['queue'])}")
        if self.batch.get("bank"):
            options.append(f"--bank={quote(self.batch['bank'])}")
        if res.exclusive and res.nodes:
            options.append("--exclusive")
        return options + render_options(self.batch.get("allocation_args"))

    def submit(self, script_path: str, workdir: str) -> str:
        self._check_script(script_path)
        done = self._call(self._flux("batch", script_path), cwd=workdir)
        job_id = done.stdout.strip().split()[-1] if done.stdout.strip() else ""
        if not re.match(r"^(ƒ|f)?[1-9A-HJ-NP-Za-km-z]+$", job_id):
            raise LegatoError(f"flux batch printed no job id: {done.stdout.strip()[:200]!r}")
        return job_id

    def poll(self, job_ids: Sequence[str]) -> dict[str, JobState]:
        if not job_ids:
            return {}
        done = self._call(self._flux("jobs", "-n", "--format={id.f58} {status}", *job_ids), harmless=UNKNOWN_JOB)
        return parse_jobs(done.stdout, job_ids)

    def cancel(self, job_ids: Sequence[str]) -> None:
        if job_ids:
            self._call(self._flux("cancel", *job_ids), harmless=UNKNOWN_JOB)


def parse_jobs(text: str, job_ids: Sequence[str]) -> dict[str, JobState]:
    """Lines of ``{id.f58} {status}``, reported under the ids as the caller spelled them."""
    asked = {_fold(job_id): job_id for job_id in job_ids}
    states: dict[str, JobState] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and _fold(parts[0]) in asked:
            states[asked[_fold(parts[0])]] = STATES.get(parts[1], JobState.UNKNOWN)
    return states
