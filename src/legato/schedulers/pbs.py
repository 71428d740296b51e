"""PBS (OpenPBS / PBS Professional): ``#PBS`` scripts, ``qsub``, ``qstat -f -F json -x``, ``qdel``.

Resources are one ``select`` statement: with nodes, one chunk per node carrying its share of the
tasks (``mpiprocs``), their cores (``ncpus``) and the node's GPUs; with tasks only, one chunk per
task. PBS has no working-directory option (jobs start in $HOME), so the script changes into the
job's folder itself; a reservation is a queue in PBS, so it replaces ``queue``; QoS does not exist.

Finished jobs stay visible through ``-x`` (job history). Their fate is in ``Exit_status``: PBS's
own negative codes tell a walltime kill (-29) and memory kills (-26, -27) from a failure, and a
finished job without an exit status was deleted before it ran.
"""
from __future__ import annotations

import json
import math
import re
import shlex
from collections.abc import Sequence
from typing import Any

from legato.errors import LegatoError
from legato.schedulers.base import (
    JobRequest,
    JobState,
    Resources,
    Scheduler,
    hms,
    quote,
    render_options,
)

STATES = {
    "Q": JobState.PENDING, "H": JobState.PENDING, "W": JobState.PENDING, "T": JobState.PENDING,
    "M": JobState.PENDING,
    "R": JobState.RUNNING, "E": JobState.RUNNING, "B": JobState.RUNNING, "S": JobState.RUNNING,
    "U": JobState.RUNNING,
}
"""``job_state`` letters of jobs still in the system; F (finished) and X (finished subjob) go by exit status."""
EXIT_STATES = {0: JobState.COMPLETED, -29: JobState.TIMEOUT, -27: JobState.OUT_OF_MEMORY, -26: JobState.OUT_OF_MEMORY}

UNKNOWN_JOB = re.compile(r"(?i)(unknown job id|job has finished|request invalid for state)")
_JOB_ID = re.compile(r"^\d+(\[\])?(\.\S+)?$")
_SUBJOB = re.compile(r"^(\d+)\[(\d+)\]$")


def select(res: Resources) -> str | None:
    """The ``select`` chunk list; GPUs make sense per node, so asking for them implies at least one."""
    cores = res.cores_per_task or 1
    nodes = res.nodes or (1 if res.gpus else None)
    if nodes:
        per_node = math.ceil((res.procs or nodes) / nodes)
        chunk = f"{nodes}:ncpus={per_node * cores}:mpiprocs={per_node}"
        return chunk + (f":ngpus={res.gpus}" if res.gpus else "")
    if res.procs:
        return f"{res.procs}:ncpus={cores}:mpiprocs=1"
    return None


class Pbs(Scheduler):
    key = "pbs"
    directive = "#PBS"

    def launcher(self, nodes: int | None, procs: int | None, **run: Any) -> str:
        return "mpiexec" + (f" -n {procs}" if procs else "")

    def directives(self, job: JobRequest) -> list[str]:
        res = job.resources
        options = [f"-N {quote(job.name)}", f"-o {quote(job.stdout)}", f"-e {quote(job.stderr)}"]
        chunks = select(res)
        if chunks:
            options.append(f"-l select={chunks}")
        if res.seconds:
            options.append(f"-l walltime={hms(res.seconds)}")
        if res.exclusive:
            options.append("-l place=scatter:excl" if (res.nodes or 0) > 1 else "-l place=excl")
        queue = res.reservation or self.batch.get("queue")
        named = [("-q", queue), ("-A", self.batch.get("bank"))]
        options += [f"{flag} {quote(value)}" for flag, value in named if value]
        if job.array:
            first, last, limit = job.array
            options.append(f"-J {first}-{last}" + (f"%{limit}" if limit else ""))
        return options + render_options(self.batch.get("args"), dash="-")

    def preamble(self, job: JobRequest) -> list[str]:
        return [f"cd {shlex.quote(job.workdir)} || exit 1"]

    def submit(self, script_path: str, workdir: str) -> str:
        self._check_script(script_path)
        done = self._call(["qsub", script_path], cwd=workdir)
        job_id = done.stdout.strip()
        if not _JOB_ID.match(job_id):
            raise LegatoError(f"qsub printed no job id: {job_id[:200]!r}")
        return job_id

    def poll(self, job_ids: Sequence[str]) -> dict[str, JobState]:
        if not job_ids:
            return {}
        done = self._call(["qstat", "-f", "-F", "json", "-x", "-t", *job_ids], harmless=UNKNOWN_JOB)
        return parse_qstat(done.stdout, job_ids)

    def cancel(self, job_ids: Sequence[str]) -> None:
        if job_ids:
            self._call(["qdel", *job_ids], harmless=UNKNOWN_JOB)


def _sequence(job_id: str) -> str:
    """"123[].server" -> "123[]": servers may print longer or shorter host parts than qsub did."""
    return job_id.split(".")[0]


def _state(attributes: dict[str, Any]) -> JobState:
    letter = str(attributes.get("job_state", ""))
    if letter in STATES:
        return STATES[letter]
    if letter not in ("F", "X"):
        return JobState.UNKNOWN
    status = attributes.get("Exit_status")
    if status is None:
        return JobState.CANCELLED
    try:
        return EXIT_STATES.get(int(status), JobState.FAILED)
    except ValueError:
        return JobState.FAILED


def parse_qstat(text: str, job_ids: Sequence[str]) -> dict[str, JobState]:
    """``{"timestamp":..,"pbs_version":..,"pbs_server":..,"Jobs":{"<id>":{"job_state":..,"Exit_status":..}}}``.

    With ``-t`` subjobs "123[4].server" appear next to their array "123[].server"; the array's own
    record is left out, each subjob is reported as "<array id>_<index>".
    """
    try:
        jobs = json.loads(text or "{}").get("Jobs", {})
    except json.JSONDecodeError:
        raise LegatoError(f"qstat printed no JSON: {text.strip()[:200]!r}") from None
    asked = {_sequence(job_id): job_id for job_id in job_ids}
    states: dict[str, JobState] = {}
    for name, attributes in jobs.items():
        sequence = _sequence(name)
        subjob = _SUBJOB.match(sequence)
        if subjob and f"{subjob[1]}[]" in asked:
            states[f"{asked[subjob[1] + '[]']}_{subjob[2]}"] = _state(attributes)
        elif sequence in asked and not sequence.endswith("[]"):
            states[asked[sequence]] = _state(attributes)
    return states
