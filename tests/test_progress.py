"""Campaign progress: a snapshot's rate and ETA, plain lines when piped, rich's bar on a terminal, and ``legato batch``'s use of them."""
from __future__ import annotations

import io
import re

from legato.progress import CampaignProgress, campaign_reporter
from tests.campaign.files.checks import legato


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_rate_and_eta_count_only_this_drivers_rows():
    snapshot = CampaignProgress(1000, 300, 4, started=100.0, batches=[(3, "running")], rows_before=100)
    assert snapshot.rate(now=110.0) == 20.0
    assert snapshot.eta(now=110.0) == 35.0
    assert CampaignProgress(None, 5, 0, started=100.0).eta(now=110.0) is None
    assert CampaignProgress(10, 0, 0, started=100.0).eta(now=110.0) is None


def test_plain_lines_at_most_one_per_interval():
    stream = io.StringIO()
    show = campaign_reporter(stream, interval=3600)
    show(CampaignProgress(20, 6, 1, started=0.0, batches=[(2, "running"), (3, "prepared")]))
    show(CampaignProgress(20, 9, 1, started=0.0))
    show(CampaignProgress(20, 12, 1, started=0.0))
    show.close()
    first, last = stream.getvalue().splitlines()  # the held-back last snapshot is written on close
    assert "rows 6/20 done, 1 failed" in first and "batches in flight: 2 running, 3 prepared" in first
    assert re.search(r"[0-9.]+ rows/s, ETA [0-9:]+", first), first
    assert "rows 12/20 done" in last and "batches in flight: none" in last


def test_terminal_gets_a_bar_with_counts_and_batches():
    stream = Terminal()
    show = campaign_reporter(stream)
    show(CampaignProgress(20, 12, 2, started=0.0, batches=[(3, "harvested")]))
    show.close()
    drawn = stream.getvalue()
    assert "━" in drawn and "12/20" in drawn and "2 failed" in drawn and "3 harvested" in drawn


def test_piped_batch_prints_progress_lines(sample_dir):
    done = legato("batch", "batched_parameters_demo.yaml", "-b", "6", "--rows", "params.csv", "--index", "param_combo",
                  "--min-free", "1M", "--min-inodes", "0", "-o", "camp", cwd=sample_dir)
    assert done.returncode == 0, done.stderr
    progress = [line for line in done.stdout.splitlines() if re.search(r" rows [0-9]+/20 done", line)]
    assert 1 < len(progress) < 5 and "batches in flight:" in progress[0], done.stdout
    assert "rows 20/20 done, 0 failed" in progress[-1] and "batches in flight: none" in progress[-1], done.stdout
    assert "\x1b[" not in done.stdout  # no terminal codes in a log
