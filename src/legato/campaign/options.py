"""What a campaign is asked to do (saved in its ledger) and how it ended."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from legato.selection import StepSelection


@dataclass
class CampaignOptions:
    """Everything a campaign needs to resume as it started; saved in the ledger."""

    spec: str
    batch_size: int
    pgen: str | None = None
    pargs: list[str] = field(default_factory=list)
    rows: str | None = None
    index: str | None = None
    max_rows: int | None = None
    results: str | None = None
    result_files: list[str] = field(default_factory=list)  # STEP:FILE[:FORMAT]
    archive: str | None = None
    archive_format: str = "tar.gz"  # or tar.zst, or none: a verified copy without tar
    archive_mode: str = "batch"  # batch, step or instance: what becomes one archive file
    no_archive: bool = False
    keep_workspace: bool = False
    success: list[str] = field(default_factory=list)  # STEP:RULE success rules
    keep_failed: bool = False  # copy failed instances' folders to failed/ before the workspace goes
    on_failure: str = "continue"
    min_free: int = 1 << 30
    min_inodes: int = 100_000
    window: int = 2  # batch workspaces on disk at once: running, being set up, or being harvested/archived
    layout: str = "tree"
    fanout: int = 1000
    strict_values: bool = False  # refuse row values holding shell syntax (rows others write)
    cwd: str = field(default_factory=os.getcwd)
    only: list[str] = field(default_factory=list)  # --only/--from/--until: the steps each batch runs
    start: str | None = None
    until: str | None = None

    def steps(self) -> StepSelection:
        return StepSelection(tuple(self.only), self.start, self.until)


@dataclass
class CampaignOutcome:
    """What the CLI reports when a campaign stops (finished, stopped on failure, or cancelled)."""

    folder: Path
    batches: int
    rows: int
    failed: int
    seconds: float
    stopped: str | None = None
    ran: int = 0  # rows (retried ones included) this process took through to cleaned: what the rate is made of
    log: Path | None = None  # set when the driver went to the background

    @property
    def ok(self) -> bool:
        return not self.failed and not self.stopped

    def summary(self) -> list[str]:
        if self.log:
            return [f"campaign driver started in the background; log: {self.log}",
                    f"follow it with: legato status {self.folder}"]
        rate = self.ran / self.seconds if self.seconds else 0.0
        this_run = f" ({self.ran} this run)" if self.ran != self.rows else ""
        lines = [f"{self.batches} batches, {self.rows} rows ({self.failed} failed){this_run} in {self.seconds:.1f} s, "
                 f"{rate:.1f} rows/s"]
        if self.stopped:
            lines.append(f"stopped: {self.stopped}; continue with: legato batch --resume {self.folder}")
        elif self.failed:
            lines.append(f"failed rows: legato status {self.folder} --state failed; "
                         f"rerun them: legato batch --resume {self.folder} --retry-failed")
        return lines
