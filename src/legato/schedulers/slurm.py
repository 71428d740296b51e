"""SLURM: ``#SBATCH`` scripts, ``sbatch --parsable``, ``squeue`` for states, ``scancel``.

States come from ``squeue --states=all`` with a fixed ``--format`` rather than ``--json``: the
text format is the same from SLURM 17 to 24, while the JSON layout changed between releases (and
22.05's ``squeue --json`` ignores ``--jobs``). ``--array`` puts every pending array task on its
own line, so tasks are reported one by one. Jobs squeue no longer lists are looked up once with
``scontrol show job``; sacct is not used, because many sites (and test machines) run no slurmdbd.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from legato.errors import LegatoError
from legato.schedulers.base import (
    JobRequest,
    JobState,
    Scheduler,
    expand_indices,
    hms,
    quote,
    render_options,
)

STATES = {
    "PENDING": JobState.PENDING, "REQUEUED": JobState.PENDING, "REQUEUE_HOLD": JobState.PENDING,
    "REQUEUE_FED": JobState.PENDING, "RESV_DEL_HOLD": JobState.PENDING,
    "CONFIGURING": JobState.RUNNING, "RUNNING": JobState.RUNNING, "COMPLETING": JobState.RUNNING,
    "SUSPENDED": JobState.RUNNING, "STOPPED": JobState.RUNNING, "SIGNALING": JobState.RUNNING,
    "STAGE_OUT": JobState.RUNNING, "RESIZING": JobState.RUNNING,
    "COMPLETED": JobState.COMPLETED,
    "FAILED": JobState.FAILED, "PREEMPTED": JobState.FAILED, "SPECIAL_EXIT": JobState.FAILED,
    "TIMEOUT": JobState.TIMEOUT, "DEADLINE": JobState.TIMEOUT,
    "CANCELLED": JobState.CANCELLED, "REVOKED": JobState.CANCELLED,
    "NODE_FAIL": JobState.NODE_FAIL, "BOOT_FAIL": JobState.NODE_FAIL,
    "OUT_OF_MEMORY": JobState.OUT_OF_MEMORY,
}
"""SLURM's job states (squeue's %T and scontrol's JobState) mapped onto legato's."""

UNKNOWN_JOB = re.compile(r"Invalid job id specified")
_FIELD = {name: re.compile(rf"(?:^|\s){name}=(\S+)") for name in ("JobId", "ArrayJobId", "ArrayTaskId", "JobState")}


def slurm_time(seconds: int) -> str:
    """SLURM's walltime: UNLIMITED for 0, D-HH:MM:SS past a day, else HH:MM:SS."""
    if seconds == 0:
        return "UNLIMITED"
    days, rest = divmod(seconds, 86400)
    return f"{days}-{hms(rest)}" if days else hms(rest)


def _wanted(key: str, job_ids: set[str]) -> bool:
    """squeue also lists a task by its own job id; keep lines for the ids (or arrays) we asked about."""
    return key in job_ids or key.split("_")[0] in job_ids


class Slurm(Scheduler):
    key = "slurm"
    directive = "#SBATCH"

    def launcher(self, nodes: int | None, procs: int | None, **run: Any) -> str:
        """``srun -n <procs> -N <nodes> -c <cores per task>``, in Maestro's order."""
        words = ["srun"]
        for flag, value in (("-n", procs), ("-N", nodes), ("-c", run.get("cores per task"))):
            if value not in (None, ""):
                words += [flag, str(value)]
        return " ".join(words)

    def directives(self, job: JobRequest) -> list[str]:
        res = job.resources
        options = [f"--job-name={quote(job.name)}", f"--chdir={quote(job.workdir)}",
                   f"--output={quote(job.stdout)}", f"--error={quote(job.stderr)}"]
        counts = [("nodes", res.nodes), ("ntasks", res.procs), ("cpus-per-task", res.cores_per_task)]
        options += [f"--{name}={value}" for name, value in counts if value]
        if res.gpus:
            options.append(f"--gres=gpu:{res.gpus}")
        if res.seconds is not None:
            options.append(f"--time={slurm_time(res.seconds)}")
        named = [("partition", self.batch.get("queue")), ("account", self.batch.get("bank")),
                 ("reservation", res.reservation), ("qos", res.qos)]
        options += [f"--{name}={quote(value)}" for name, value in named if value]
        if res.exclusive:
            options.append("--exclusive")
        if job.array:
            first, last, limit = job.array
            options.append(f"--array={first}-{last}" + (f"%{limit}" if limit else ""))
        return options + render_options(self.batch.get("args"))

    def submit(self, script_path: str, workdir: str) -> str:
        self._check_script(script_path)
        done = self._call(["sbatch", "--parsable", script_path], cwd=workdir)
        job_id = done.stdout.strip().split(";")[0]  # --parsable prints "id" or "id;cluster"
        if not job_id.isdigit():
            raise LegatoError(f"sbatch printed no job id: {done.stdout.strip()[:200]!r}")
        return job_id

    def poll(self, job_ids: Sequence[str]) -> dict[str, JobState]:
        if not job_ids:
            return {}
        wanted = set(job_ids)
        done = self._call(["squeue", "--noheader", "--array", "--all", "--states=all",
                           f"--jobs={','.join(job_ids)}", "--format=%i %T"], harmless=UNKNOWN_JOB)
        states = parse_squeue(done.stdout, wanted)
        if any(not _known(job_id, states) for job_id in job_ids):
            shown = self._call(["scontrol", "--oneliner", "show", "job"], harmless=UNKNOWN_JOB)
            found = parse_scontrol(shown.stdout, wanted)
            states.update({key: state for key, state in found.items() if key not in states})
        return states

    def cancel(self, job_ids: Sequence[str]) -> None:
        if job_ids:
            self._call(["scancel", *job_ids], harmless=UNKNOWN_JOB)


def _known(job_id: str, states: dict[str, JobState]) -> bool:
    return job_id in states or any(key.startswith(job_id + "_") for key in states)


def parse_squeue(text: str, job_ids: set[str]) -> dict[str, JobState]:
    """Lines of ``%i %T``: "12 RUNNING", "13_4 PENDING"."""
    states: dict[str, JobState] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and _wanted(parts[0], job_ids):
            states[parts[0]] = STATES.get(parts[1], JobState.UNKNOWN)
    return states


def parse_scontrol(text: str, job_ids: set[str]) -> dict[str, JobState]:
    """``scontrol --oneliner show job``: one "JobId=.. ArrayJobId=.. ArrayTaskId=.. JobState=.." line per job.

    A pending array keeps its not-yet-started tasks on one line ("ArrayTaskId=4-9%2"): each task
    of that range is reported.
    """
    states: dict[str, JobState] = {}
    for line in text.splitlines():
        fields = {name: match[1] for name, pattern in _FIELD.items() if (match := pattern.search(line))}
        if "JobId" not in fields or "JobState" not in fields:
            continue
        state = STATES.get(fields["JobState"], JobState.UNKNOWN)
        if "ArrayTaskId" in fields and "ArrayJobId" in fields:
            keys = [f"{fields['ArrayJobId']}_{task}" for task in expand_indices(fields["ArrayTaskId"])]
        else:
            keys = [fields["JobId"]]
        states.update({key: state for key in keys if _wanted(key, job_ids)})
    return states
