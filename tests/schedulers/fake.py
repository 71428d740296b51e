"""A stand-in for a scheduler's command-line tools: answers with recorded output, counts calls."""
from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass
class Call:
    argv: list[str]
    input: str | None
    cwd: str | None


@dataclass
class FakeRunner:
    """Give it the answers (stdout, stderr, returncode) in the order the adapter will ask."""

    answers: list[tuple[str, str, int]] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)

    def answer(self, stdout: str = "", stderr: str = "", returncode: int = 0) -> FakeRunner:
        self.answers.append((stdout, stderr, returncode))
        return self

    def __call__(self, argv: Sequence[str], input: str | None = None, cwd: str | None = None):
        self.calls.append(Call(list(argv), input, cwd))
        if not self.answers:
            raise AssertionError(f"unexpected command: {' '.join(argv)}")
        stdout, stderr, returncode = self.answers.pop(0)
        return subprocess.CompletedProcess(list(argv), returncode, stdout, stderr)

    @property
    def commands(self) -> list[str]:
        return [call.argv[0] if call.argv[0] != "flux" else " ".join(call.argv[:2]) for call in self.calls]
