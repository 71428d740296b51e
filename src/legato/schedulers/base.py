"""What every scheduler adapter shares: the request types, job states, walltimes, launchers.

An adapter only talks to its scheduler through command-line tools (sbatch, flux, bsub, qsub...),
and always through ``self.run``. Tests swap that one attribute for a recorder that answers with
the output formats the schedulers document, so every adapter is tested without its scheduler
installed, and every command it runs is counted.
"""
from __future__ import annotations

import os
import re
import subprocess
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar

from legato.errors import LegatoError
from legato.walltime import parse_walltime

COMMAND_TIMEOUT = 120
"""Seconds a scheduler command may take: a controller that hangs must not hang the conductor."""

Runner = Callable[..., "subprocess.CompletedProcess[str]"]
"""``run(argv, input=None, cwd=None) -> CompletedProcess`` with text stdout and stderr."""


def run_command(argv: Sequence[str], input: str | None = None, cwd: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run one scheduler command; a missing tool or a hung controller becomes a LegatoError."""
    if cwd is not None and not os.path.isdir(cwd):
        raise LegatoError(f"working folder {cwd} does not exist")
    try:
        return subprocess.run(list(argv), input=input, cwd=cwd, capture_output=True, text=True,
                              timeout=COMMAND_TIMEOUT, check=False)
    except FileNotFoundError:
        raise LegatoError(f"{argv[0]}: command not found (is the scheduler installed and on PATH?)") from None
    except subprocess.TimeoutExpired:
        raise LegatoError(f"{' '.join(argv[:2])} did not answer within {COMMAND_TIMEOUT} s") from None


class JobState(StrEnum):
    """The states a conductor acts on; each adapter maps its scheduler's many states onto these."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    TIMEOUT = "TIMEOUT"
    CANCELLED = "CANCELLED"
    NODE_FAIL = "NODE_FAIL"
    OUT_OF_MEMORY = "OUT_OF_MEMORY"
    UNKNOWN = "UNKNOWN"


# ---------------------------------------------------------------- values from the spec

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0", ""}


def _count(value: Any, key: str) -> int | None:
    """A resource count from YAML or a substituted token ("4"); 0 and "" mean "not asked for"."""
    if value is None or value == "" or value is False:
        return None
    try:
        number = int(str(value).strip())
    except ValueError:
        raise LegatoError(f"{key} must be a whole number, not {value!r}") from None
    if number < 0:
        raise LegatoError(f"{key} must not be negative, got {value!r}")
    return number or None


def _flag(value: Any, key: str) -> bool:
    """Maestro accepts a bool, a substituted "$(VAR)" string, or {allocation, launcher} for exclusive."""
    if isinstance(value, Mapping):
        value = value.get("allocation", False)
    if isinstance(value, bool) or value is None:
        return bool(value)
    text = str(value).strip().lower()
    if text in _TRUE | _FALSE:
        return text in _TRUE
    raise LegatoError(f"{key} must be true or false, not {value!r}")


def _text(value: Any) -> str | None:
    return None if value is None or str(value).strip() == "" else str(value).strip()


@dataclass(frozen=True)
class Resources:
    """What one job asks for: the spec's batch block defaults, overridden by the step's run keys."""

    nodes: int | None = None
    procs: int | None = None
    gpus: int | None = None
    """GPUs per node, as SLURM's ``--gres=gpu:N`` and Maestro mean it."""
    cores_per_task: int | None = None
    walltime: str | None = None
    """Maestro's forms: "HH:MM:SS", "MM:SS", "D-HH:MM:SS", whole minutes, or "inf"."""
    exclusive: bool = False
    reservation: str | None = None
    qos: str | None = None

    @classmethod
    def from_spec(cls, batch: Mapping[str, Any], run: Mapping[str, Any]) -> Resources:
        """Merge with Maestro's key names ("cores per task"); empty run values fall back to batch."""

        def pick(key: str) -> Any:
            value = run.get(key)
            return batch.get(key) if value is None or value == "" else value

        walltime = _text(pick("walltime"))
        parse_walltime(walltime)  # a bad walltime is reported now, not at submission
        return cls(nodes=_count(pick("nodes"), "nodes"), procs=_count(pick("procs"), "procs"),
                   gpus=_count(pick("gpus"), "gpus"), cores_per_task=_count(pick("cores per task"), "cores per task"),
                   walltime=walltime, exclusive=_flag(pick("exclusive"), "exclusive"),
                   reservation=_text(pick("reservation")), qos=_text(pick("qos")))

    @property
    def seconds(self) -> int | None:
        return parse_walltime(self.walltime)


@dataclass(frozen=True)
class JobRequest:
    """One batch job: its shell lines, where it runs and writes, and what it asks for."""

    name: str
    workdir: str
    body: str
    resources: Resources
    stdout: str
    stderr: str
    array: tuple[int, int, int | None] | None = None
    """(first, last, max running at once) turns the job into a job array of last-first+1 tasks."""


# ---------------------------------------------------------------- walltime

def hms(seconds: int) -> str:
    """HH:MM:SS with hours allowed past 24, which PBS and Flux-style tools accept."""
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


# ---------------------------------------------------------------- small rendering helpers

_SAFE = re.compile(r"^[\w@%+=:,./\-]+$")


def quote(value: Any) -> str:
    """Double quotes when a directive value needs them: every scheduler's directive parser reads them."""
    text = str(value)
    if _SAFE.match(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_options(options: Mapping[str, Any] | None, dash: str = "--") -> list[str]:
    """``{"mem": "4G", "requeue": True, "-C": "haswell"}`` -> ``--mem=4G``, ``--requeue``, ``-C haswell``.

    Multi-letter keys get ``dash``: LSF and PBS spell every option with one ("-app name"). A list
    value repeats the option; a mapping value renders ``--key=k=v`` per entry (Flux's
    ``--setattr``/``--conf`` style); None and False leave the option out.
    """
    rendered: list[str] = []
    for key, value in (options or {}).items():
        name = key if key.startswith("-") else ("-" if len(key) == 1 else dash) + key
        values = value if isinstance(value, list) else [value]
        if isinstance(value, Mapping):
            values = [f"{k}={v}" for k, v in value.items()]
        for item in values:
            if item is None or item is False:
                continue
            if item is True:
                rendered.append(name)
            elif name.startswith("--"):
                rendered.append(f"{name}={quote(item)}")
            else:
                rendered.append(f"{name} {quote(item)}")
    return rendered


def expand_indices(spec: str) -> list[int]:
    """Array task ids from a scheduler's range text: "5,7%1", "0-9%2", "1-7:2", "[3-4]"."""
    spec = spec.strip().strip("[]").split("%")[0]
    tasks: list[int] = []
    for part in filter(None, spec.split(",")):
        bounds, _, step = part.partition(":")
        first, _, last = bounds.partition("-")
        tasks.extend(range(int(first), int(last or first) + 1, int(step or 1)))
    return tasks


# ---------------------------------------------------------------- $(LAUNCHER)

_LAUNCHER = re.compile(r"\$\(LAUNCHER\)(?:\[([^\]]*)\])?")
_LEGACY = re.compile(r"^\s*(\d+)\s*,\s*(\d+)\s*$")  # Maestro's legacy [nodes, procs]
_PART = re.compile(r"^\s*(\d+)\s*([np])\s*$")


def _override(text: str) -> tuple[int | None, int]:
    """``[2n, 8p]``, ``[8p, 2n]``, ``[8p]`` or the legacy ``[2, 8]``: (nodes, procs), in either order as in Maestro."""
    legacy = _LEGACY.match(text)
    if legacy:
        return int(legacy[1]), int(legacy[2])
    counts: dict[str, int] = {}
    for part in text.split(","):
        match = _PART.match(part)
        if not match or match[2] in counts:
            counts = {}
            break
        counts[match[2]] = int(match[1])
    if "p" not in counts:
        raise LegatoError(f"$(LAUNCHER)[{text}] is not one of the forms [<N>n, <M>p], [<M>p, <N>n], [<M>p] or [<N>, <M>]")
    return counts.get("n"), counts["p"]


def _check_budget(used: int, allowed: int | None, what: str, cmd: str) -> None:
    if allowed is not None and used > allowed:
        raise LegatoError(f"$(LAUNCHER) overrides use {used} {what} but the step asks for {allowed}: {cmd.strip()[:80]}")


# ---------------------------------------------------------------- the interface


class Scheduler(ABC):
    """One scheduler behind the interface the conductor uses: scripts, submit, poll, cancel."""

    key: ClassVar[str]
    directive: ClassVar[str]
    """The prefix of a directive line, e.g. ``#SBATCH``."""

    def __init__(self, batch: Mapping[str, Any]) -> None:
        self.batch = dict(batch)
        self.shell = _text(batch.get("shell")) or "/bin/bash"
        self.run: Runner = run_command

    # -- what a script looks like

    @abstractmethod
    def launcher(self, nodes: int | None, procs: int | None, **run: Any) -> str:
        """The parallel launch command $(LAUNCHER) becomes; ``run`` holds the step's other run keys."""

    @abstractmethod
    def directives(self, job: JobRequest) -> list[str]:
        """The options of the job's directive lines, without the prefix."""

    def preamble(self, job: JobRequest) -> list[str]:
        """Shell lines between the directives and the body; schedulers without a cwd option cd here."""
        return []

    def job_script(self, job: JobRequest) -> str:
        lines = [f"#!{self.shell}"]
        lines += [f"{self.directive} {option}" for option in self.directives(job)]
        lines += ["", *self.preamble(job), job.body.rstrip("\n")]
        return "\n".join(lines) + "\n"

    def expand_launchers(self, cmd: str, run: Mapping[str, Any]) -> str:
        """Replace $(LAUNCHER) and its [Nn, Mp] overrides; overrides may not exceed the step's request.

        As in Maestro, the launcher gets the step's own ``nodes`` and ``procs``, never the batch
        block's (those size the allocation, not one parallel call). Unlike Maestro, a bare
        $(LAUNCHER) is replaced even when the command also uses overrides.
        """
        nodes = _count(run.get("nodes"), "nodes")
        procs = _count(run.get("procs"), "procs")
        extras = {k: v for k, v in run.items() if k not in ("nodes", "procs")}
        used_nodes = used_procs = 0

        def replace(match: re.Match[str]) -> str:
            nonlocal used_nodes, used_procs
            if match[1] is None:
                return self.launcher(nodes, procs, **extras)
            override_nodes, override_procs = _override(match[1])
            used_nodes += override_nodes or 0
            used_procs += override_procs
            return self.launcher(override_nodes, override_procs, **extras)

        expanded = _LAUNCHER.sub(replace, cmd)
        _check_budget(used_nodes, nodes, "nodes", cmd)
        _check_budget(used_procs, procs, "procs", cmd)
        return expanded

    # -- talking to the scheduler

    @abstractmethod
    def submit(self, script_path: str, workdir: str) -> str:
        """Submit a written script; returns the job id the scheduler gave it."""

    @abstractmethod
    def poll(self, job_ids: Sequence[str]) -> dict[str, JobState]:
        """States of the given jobs in one command; array tasks as "<id>_<task>"; unknown jobs absent."""

    @abstractmethod
    def cancel(self, job_ids: Sequence[str]) -> None:
        """Cancel the given jobs in one command; jobs that already ended are not an error."""

    def _call(self, argv: Sequence[str], *, input: str | None = None, cwd: str | None = None,
              harmless: re.Pattern[str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run a command; a failure is a LegatoError with the scheduler's own message.

        ``harmless`` matches error lines that only say a job is unknown or already over; a failure
        whose every error line matches it is not raised.
        """
        done = self.run(list(argv), input=input, cwd=cwd)
        if done.returncode != 0:
            lines = [line for line in (done.stderr or "").splitlines() if line.strip()]
            if harmless is not None and lines and all(harmless.search(line) for line in lines):
                return done
            message = " ".join(lines) or (done.stdout or "").strip() or f"exit status {done.returncode}"
            raise LegatoError(f"{argv[0]} failed: {message}")
        return done

    def _check_script(self, script_path: str) -> None:
        if not os.path.isfile(script_path):
            raise LegatoError(f"job script {script_path} does not exist")
