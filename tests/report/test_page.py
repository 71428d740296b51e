"""``legato report``: the page's content, made from a finished campaign and from a plain study folder."""
from __future__ import annotations

import re

from legato.report.facts import gather
from legato.report.page import render
from tests.campaign.files.checks import csv_rows, legato


def test_campaign_report_has_summary_charts_and_failures(campaign):
    done = legato("report", "camp", cwd=campaign.parent)
    assert done.returncode == 0, done.stderr
    page = (campaign / "report.html").read_text()
    assert not re.findall(r"(?:src|href)=[\"'](?!#|data:)", page)  # nothing to fetch: every chart and style inline
    assert "<script" not in page and "<link" not in page
    bad = sorted(int(key) for key, row in csv_rows(campaign.parent / "params.csv").items() if int(row["param1"]) < 30)
    summary = re.search(r"<div class='summary' id='summary'>(.*?)</div></div>", page).group(1)
    assert f"rows done<b>{20 - len(bad)}</b>" in summary and f"rows failed<b>{len(bad)}</b>" in summary
    assert "rows total<b>20</b>" in summary and "batches<b>4 done of 4</b>" in summary
    assert "disk used, high water" in summary and "archives" in summary
    titles = re.findall(r"<figure class='chart' data-title='([^']*)'>\s*<svg", page)
    assert {"rows finished over time", "throughput per batch", "instance durations", "failures by reason"} <= set(titles)
    assert "echo-params_PARAM1: distribution" in titles and "echo-params_PARAM1 against PARAM2" in titles
    failures = page[page.index("<table id='failures'>"):]
    assert "exit code 3" in failures and "PARAM1 too small" in failures  # the reason and the last line of stderr
    assert f"<td>{bad[0]}</td>" in failures  # an example row by its index value


def test_report_to_a_chosen_file_and_bad_places(campaign, tmp_path):
    done = legato("report", "camp", "-o", str(tmp_path / "r.html"), cwd=campaign.parent)
    assert done.returncode == 0 and (tmp_path / "r.html").stat().st_size > 10_000, done.stderr
    done = legato("report", "camp", "-o", str(tmp_path / "no" / "r.html"), cwd=campaign.parent)
    assert done.returncode == 2 and done.stderr.startswith("legato: error:") and "no folder" in done.stderr
    done = legato("report", str(tmp_path), cwd=campaign.parent)
    assert done.returncode == 2 and done.stderr.startswith("legato: error:") and "legato.db" in done.stderr


def test_study_report(study):
    facts = gather(study)
    assert facts.kind == "study" and facts.rows == 20 and facts.failed == facts.reasons["exit code 3"] > 0
    assert set(facts.parameters) == {"PARAM1", "PARAM2", "PARAM3"} and not facts.results
    example = facts.examples["exit code 3"][0]
    assert example.returncode == 3 and example.params["PARAM1"] < 30 and "PARAM1 too small" in example.stderr
    page = render(facts)
    assert "instance durations" in page and "rows finished over time" in page and "PARAM1 too small" in page


def test_report_of_a_running_campaign_is_a_snapshot(sample_dir):
    """While a batch sleeps, the report shows the batches already cleaned and the campaign as running."""
    import shutil
    import sqlite3
    import subprocess

    from legato import api
    from tests.campaign.files.checks import HERE, python_legato, source_env
    from tests.campaign.test_pipeline import wait_for

    shutil.copy(HERE / "slow.yaml", sample_dir)
    (sample_dir / "slow.flag").touch()
    args = ["batch", "slow.yaml", "-b", "3", "--rows", "params.csv", "--index", "param_combo", "--min-free", "1M",
            "--min-inodes", "0", "-o", "camp"]
    process = subprocess.Popen(python_legato(*args), cwd=sample_dir, env=source_env(), stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def cleaned() -> int:
        with sqlite3.connect(sample_dir / "camp" / "campaign.db") as db:
            return db.execute("SELECT count(*) FROM batches WHERE phase = 'cleaned'").fetchone()[0]

    try:
        wait_for(lambda: next(sample_dir.glob("running.*"), None) and (sample_dir / "camp" / "campaign.db").is_file()
                 and cleaned())
        facts = gather(sample_dir / "camp")
        assert process.poll() is None
        page = render(facts)
        api.cancel(sample_dir / "camp")
    finally:
        process.kill()
        process.wait()
    assert facts.state == "running" and facts.rows >= 3 and facts.total == 20
    assert "state: running" in page and "rows total<b>20</b>" in page
