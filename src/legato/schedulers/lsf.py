"""IBM Spectrum LSF: ``#BSUB`` scripts fed to ``bsub`` on stdin, ``bjobs -o ... -json``, ``bkill``.

Node counts use ``-nnodes`` as on CSM/jsrun machines (LLNL, ORNL), which is where Maestro's LSF
users are; a request with tasks but no nodes uses ``-n``. The launcher is ``jsrun`` unless the
batch block says ``launcher: lrun``. LSF has no QoS, so a ``qos`` request is not rendered.

Array elements are ``id[index]`` to LSF; they are reported as "<id>_<index>" like every adapter.
The reason an EXIT job ended (``exit_reason``) tells a time limit or memory limit from a failure.
"""
from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from typing import Any

from legato.errors import LegatoError
from legato.schedulers.base import (
    JobRequest,
    JobState,
    Scheduler,
    quote,
    render_options,
)

STATES = {
    "PEND": JobState.PENDING, "PSUSP": JobState.PENDING, "WAIT": JobState.PENDING, "PROV": JobState.PENDING,
    "RUN": JobState.RUNNING, "USUSP": JobState.RUNNING, "SSUSP": JobState.RUNNING,
    "DONE": JobState.COMPLETED, "EXIT": JobState.FAILED,
    "UNKWN": JobState.UNKNOWN, "ZOMBI": JobState.UNKNOWN,
}
EXIT_REASONS = [
    (re.compile(r"TERM_RUNLIMIT|TERM_DEADLINE"), JobState.TIMEOUT),
    (re.compile(r"TERM_MEMLIMIT|TERM_SWAP"), JobState.OUT_OF_MEMORY),
    (re.compile(r"TERM_OWNER|TERM_ADMIN|TERM_FORCE_OWNER|TERM_FORCE_ADMIN|killed by owner"), JobState.CANCELLED),
    (re.compile(r"TERM_HOST|TERM_LOAD|TERM_ZOMBIE"), JobState.NODE_FAIL),
]
"""LSF's termination reasons (``exit_reason``, e.g. "TERM_RUNLIMIT: job killed after reaching LSF run time limit")."""

UNKNOWN_JOB = re.compile(r"(?i)(is not found|no matching job|already finished|has already)")
_SUBMITTED = re.compile(r"Job <(\d+)> is submitted")
_LAUNCHER_KEYS = [("tasks per rs", "-a"), ("rs per node", "-r"), ("cpus per rs", "-c")]


def lsf_minutes(seconds: int) -> str:
    """``-W`` takes [HH:]MM: seconds are rounded up to the next minute, as Maestro does."""
    minutes = math.ceil(seconds / 60)
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


class Lsf(Scheduler):
    key = "lsf"
    directive = "#BSUB"

    def launcher(self, nodes: int | None, procs: int | None, **run: Any) -> str:
        """Maestro's jsrun line: resource sets, binding, GPUs, then tasks, sets per node and cpus per set.

        ``-b``, ``-a``, ``-r`` and ``-c`` are always written (defaults ``rs``, 1, 1, 1) because jsrun's
        own defaults differ from what Maestro users' scripts were written against.
        """
        if self.batch.get("launcher") == "lrun":
            words = ["lrun"] + (["-N", str(nodes)] if nodes else []) + (["-n", str(procs)] if procs else [])
            return " ".join(words)

        def given(key: str, default: Any = None) -> Any:
            value = run.get(key)
            return default if value in (None, "", 0) else value

        words = ["jsrun"] + (["--nrs", str(procs)] if procs else []) + ["-b", str(given("bind", "rs"))]
        for key, flag in (("gpus", "-g"), ("bind gpus", "-B")):
            if given(key):
                words += [flag, str(given(key))]
        for key, flag in _LAUNCHER_KEYS:
            words += [flag, str(given(key, 1))]
        return " ".join(words)

    def directives(self, job: JobRequest) -> list[str]:
        res = job.resources
        name = job.name
        if job.array:
            first, last, limit = job.array
            if first < 1:
                raise LegatoError(f"job {job.name}: LSF array indices start at 1, not {first}")
            name += f"[{first}-{last}]" + (f"%{limit}" if limit else "")
        options = [f"-J {quote(name)}", f"-cwd {quote(job.workdir)}", f"-o {quote(job.stdout)}",
                   f"-e {quote(job.stderr)}"]
        if res.nodes:
            options.append(f"-nnodes {res.nodes}")
        elif res.procs:
            options.append(f"-n {res.procs}")
        if res.gpus:
            options.append(f"-gpu num={res.gpus}")
        if res.seconds:
            options.append(f"-W {lsf_minutes(res.seconds)}")
        named = [("-q", self.batch.get("queue")), ("-G", self.batch.get("bank")), ("-U", res.reservation)]
        options += [f"{flag} {quote(value)}" for flag, value in named if value]
        if res.exclusive:
            options.append("-x")
        return options + render_options(self.batch.get("args"), dash="-")

    def submit(self, script_path: str, workdir: str) -> str:
        """bsub reads the script on stdin: only then does it honour the #BSUB lines."""
        self._check_script(script_path)
        with open(script_path) as script:
            text = script.read()
        done = self._call(["bsub"], input=text, cwd=workdir)
        match = _SUBMITTED.search(done.stdout)
        if not match:
            raise LegatoError(f"bsub printed no job id: {done.stdout.strip()[:200]!r}")
        return match[1]

    def poll(self, job_ids: Sequence[str]) -> dict[str, JobState]:
        if not job_ids:
            return {}
        done = self._call(["bjobs", "-a", "-o", "jobid jobindex stat exit_reason", "-json", *job_ids],
                          harmless=UNKNOWN_JOB)
        return parse_bjobs(done.stdout, set(job_ids))

    def cancel(self, job_ids: Sequence[str]) -> None:
        if job_ids:
            self._call(["bkill", *job_ids], harmless=UNKNOWN_JOB)


def _state(record: dict[str, Any]) -> JobState:
    state = STATES.get(str(record.get("STAT", "")), JobState.UNKNOWN)
    if state is JobState.FAILED:
        reason = str(record.get("EXIT_REASON", ""))
        state = next((mapped for pattern, mapped in EXIT_REASONS if pattern.search(reason)), state)
    return state


def parse_bjobs(text: str, job_ids: set[str]) -> dict[str, JobState]:
    """``{"COMMAND":"bjobs","JOBS":n,"RECORDS":[{"JOBID":..,"JOBINDEX":..,"STAT":..,"EXIT_REASON":..}]}``.

    Records of unknown jobs carry an "ERROR" ("Job <9> is not found") and are left out.
    """
    try:
        records = json.loads(text or "{}").get("RECORDS", [])
    except json.JSONDecodeError:
        raise LegatoError(f"bjobs printed no JSON: {text.strip()[:200]!r}") from None
    states: dict[str, JobState] = {}
    for record in records:
        job_id = str(record.get("JOBID", ""))
        if "ERROR" in record or job_id not in job_ids:
            continue
        index = str(record.get("JOBINDEX", "0") or "0")
        states[job_id if index == "0" else f"{job_id}_{index}"] = _state(record)
    return states
