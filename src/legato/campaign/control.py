"""Starting, resuming and cancelling a campaign folder, and reading what it made (results, archives)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from legato.campaign.ledger import LEDGER, Ledger, never_started, options_of, save_options
from legato.campaign.options import CampaignOutcome
from legato.errors import LegatoError
from legato.launch import ClusterOptions, _background, _execution_argv, _signal_holder
from legato.launch import cancel as cancel_study
from legato.spec import load_spec
from legato.workspace import study_folder

if TYPE_CHECKING:
    from legato.campaign.harvest import ResultSink

CAMPAIGN_LOCK = ".campaign.lock"


def batch(options, *, out: str | os.PathLike | None = None, execution: dict | None = None, detach: bool = False,
          log=print, progress: bool = True):
    """Start a batch campaign (``legato batch``): returns its ``CampaignOutcome``.

    ``execution`` holds ``execute``'s keywords (jobs, throttle, attempts, cluster) for every batch.
    """
    from dataclasses import replace as with_changes


    spec = load_spec(options.spec)
    folder = study_folder(spec.variables.get("OUTPUT_PATH"), spec.name, str(out) if out else None)
    if folder.exists() and any(folder.iterdir()) and not never_started(folder):
        raise LegatoError(f"{folder}: the campaign folder exists and is not empty (resume it with: legato batch --resume {folder})")
    options = with_changes(
        options, spec=str(spec.path), pgen=_absolute(options.pgen), rows=_absolute_rows(options.rows),
        archive=_absolute(options.archive),
    )
    if options.pgen is None and options.rows is None and not spec.product:
        raise LegatoError("legato batch needs rows: --rows SOURCE (CSV file or SQL URL), --pgen FILE "
                          "or a legato.product in the spec")
    if options.pgen and not Path(options.pgen).is_file():
        raise LegatoError(f"{options.pgen}: no such pgen file")
    _check_campaign_inputs(spec, options)
    options = with_changes(options, rows=_without_password(options.rows), results=_without_password(options.results))
    if folder.exists() and never_started(folder):
        shutil.rmtree(folder)  # left by a start killed before its ledger was whole
    folder.mkdir(parents=True, exist_ok=True)
    Ledger.create(folder, options, name=spec.name, state="running")
    if detach:
        return _detach_campaign(folder, execution or {})
    return resume_batch(folder, execution=execution, log=log, progress=progress)


def _detach_campaign(folder: Path, execution: dict):
    """The campaign driver in the background (on a login node it outlives the terminal)."""

    argv = _execution_argv(execution.get("jobs"), execution.get("throttle", 0), execution.get("attempts", 1),
                           execution.get("cluster", ClusterOptions()))
    log = _background(["batch", "--resume", str(folder), *argv], folder / "campaign.log")
    return CampaignOutcome(folder, 0, 0, 0, 0.0, log=log)


def _check_campaign_inputs(spec, options) -> None:
    """Refuse bad rows, result declarations, archive options or a results URL before a campaign folder exists,
    so a typo leaves nothing.

    The whole row source is read once here: a bad row found by the tenth batch would leave a
    half-done campaign behind an input error that was there from the start.
    """
    from legato.campaign.archive import check_archive_options
    from legato.campaign.harvest import result_files
    from legato.campaign.rows import check_rows, open_rows, split_url
    from legato.campaign.study_harvest import parse_rules

    result_files(spec, options.result_files)
    check_archive_options(options.archive_mode, options.archive_format)
    parse_rules(options.success, {step.name for step in spec.steps})
    options.steps().resolve({step.name: [dep.step for dep in step.depends] for step in spec.steps})
    if options.results:
        split_url(options.results)
    if options.rows:
        source = open_rows(options.rows, options.index)
        try:
            check_rows(source, options.index, options.max_rows, strict=options.strict_values)
        finally:
            source.close()


def _without_password(url: str | None) -> str | None:
    """A database URL as the ledger keeps it: without its password, which this process hands to libpq instead.

    libpq reads ``PGPASSWORD`` or a ``.pgpass`` file (``PGPASSFILE``) itself, so a resumed
    campaign finds the password where the user keeps it and campaign.db never holds it.
    """
    if url is None or "://" not in url:
        return url
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.password is None:
        return url
    os.environ.setdefault("PGPASSWORD", str(parsed.password))
    return parsed._replace(password=None).render_as_string(hide_password=False)  # set() keeps a None unchanged


def resume_batch(folder: str | os.PathLike, *, execution: dict | None = None, retry_failed: bool = False,
                 guard: dict | None = None, detach: bool = False, log=print, progress: bool = True):
    """Continue a campaign exactly where it stopped; ``guard`` may lower min_free/min_inodes.

    ``progress``: a live bar on a terminal (plain lines every few seconds otherwise) on standard output.
    """
    if detach:
        if retry_failed or guard:
            raise LegatoError("--detach with --resume takes no --retry-failed, --min-free or --min-inodes")

        Ledger(Path(folder).absolute()).close()  # a clear error now rather than in the log
        return _detach_campaign(Path(folder).absolute(), execution or {})
    from filelock import FileLock, Timeout


    folder = Path(folder).absolute()
    _remove_if_never_started(folder)
    ledger = Ledger(folder)
    lock = FileLock(folder / CAMPAIGN_LOCK)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        ledger.close()
        raise LegatoError(f"{folder}: the campaign is already running (see legato status {folder})") from None
    cwd = os.getcwd()
    try:
        options = options_of(ledger)
        if guard:
            from dataclasses import replace as with_changes


            options = with_changes(options, **guard)
            save_options(ledger, options)
        os.chdir(options.cwd)  # relative paths in pargs (a pgen's CSV) mean what they meant at the start
        ledger.set(pid=os.getpid(), state="running")
        from legato.campaign.pipeline import Campaign
        from legato.progress import campaign_reporter, campaign_snapshot

        campaign = Campaign(folder, options, ledger, execution, log)
        campaign.on_progress = show = campaign_reporter() if progress else None
        try:
            outcome = campaign.run(retry_failed)
        finally:
            if show:
                show(campaign_snapshot(ledger, campaign.started, campaign.rows_before))  # after the last batch's clean
                show.close()
        ledger.set(state="finished" if outcome.ok else ("stopped" if outcome.stopped else "failed"))
        return outcome
    finally:
        os.chdir(cwd)
        ledger.close()
        lock.release()


def _remove_if_never_started(folder: Path) -> None:
    """A folder left by a start killed before its ledger was whole holds nothing to resume: it goes, with a clear word."""
    if folder.is_dir() and never_started(folder):
        shutil.rmtree(folder)
        raise LegatoError(f"{folder}: the campaign never started (killed while creating its ledger); "
                          "the folder was removed: start it again with legato batch")


def _absolute(path: str | None) -> str | None:
    return str(Path(path).absolute()) if path else None


def _absolute_rows(rows: str | None) -> str | None:
    """A CSV path is made absolute; a URL is kept as given (sqlite:/// paths resolve from the start folder)."""
    return rows if rows is None or "://" in rows else _absolute(rows)


def results_sink(folder: Path) -> "ResultSink":
    """The results table a campaign folder harvests into, with the campaign's index column."""
    from legato.campaign.harvest import ResultSink

    ledger = Ledger(folder)
    try:
        options = options_of(ledger)
    finally:
        ledger.close()
    return ResultSink(options.results or f"sqlite:///{folder / 'results.db'}", index=options.index)


def archive_list(folder: str | os.PathLike, label: str | None = None) -> list[str]:
    """Each archive with its size and instance count, or the files one instance left in its archive."""
    from legato.campaign.archive import instance_members
    from legato.campaign.diskguard import human_size

    if label is None:
        return [f"{archive}  {human_size(size or 0)}  {members} members  (batch {number})"
                for number, archive, size, members in _ledger_rows(
                    folder, "SELECT number, archive, archive_bytes, members FROM batches WHERE archive IS NOT NULL ORDER BY number")]
    archive, workspace = _locate(folder, label)
    return [f"{size:>12}  {name}" for name, size in instance_members(archive, workspace)]


def archive_get(folder: str | os.PathLike, label: str, file: str | None, dest: str) -> list[str]:
    """Extract one instance's folder (or one file of it) from its batch archive into ``dest``."""
    from legato.campaign.archive import extract_instance

    archive, workspace = _locate(folder, label)
    written = extract_instance(archive, workspace, file, dest)
    if not written:
        raise LegatoError(f"{label}: no {file!r} in its archive {archive}" if file else f"{label}: nothing archived")
    return written


def _locate(folder: str | os.PathLike, label: str) -> tuple[str, str]:
    """``LABEL`` or ``STEP/LABEL`` -> (archive path, workspace inside it), using the ledger."""
    step, _, name = label.rpartition("/")
    sql = ("SELECT DISTINCT b.archive, i.workspace, i.step, b.number FROM instances i JOIN batches b ON b.number = i.batch "
           "WHERE i.label = ? AND i.state != 'retried'" + (" AND i.step = ?" if step else ""))
    matches = _ledger_rows(folder, sql, (name, step) if step else (name,))
    if not matches:
        raise LegatoError(f"{label}: no such instance in {folder}")
    if len(matches) > 1:
        where = ", ".join(f"{s}/{name} in batch {n}" for _, _, s, n in matches[:5])
        raise LegatoError(f"{label}: several instances match ({where}); name it as STEP/LABEL")
    archive, workspace, _, number = matches[0]
    if not archive:
        raise LegatoError(f"{label}: batch {number} has no archive (--no-archive, or not archived yet)")
    return archive, workspace


def _ledger_rows(folder: str | os.PathLike, sql: str, args: tuple = ()) -> list[tuple]:

    ledger = Ledger(Path(folder).absolute())
    try:
        return ledger.db.execute(sql, args).fetchall()
    finally:
        ledger.close()


def is_campaign(folder: Path) -> bool:
    return (folder / LEDGER).is_file()


def cancel_campaign(folder: Path, wait: float) -> str:

    ledger = Ledger(folder)
    try:
        pid = ledger.get("pid")
        running = [b for b in ledger.batches(unfinished=True)]
    finally:
        ledger.close()
    if _signal_holder(folder / CAMPAIGN_LOCK, pid, wait):
        return f"cancelled: the campaign in {folder} stopped; continue it with: legato batch --resume {folder}"
    studies = [batch.study for batch in running if (batch.study / "legato.db").is_file()]
    for study in studies:
        cancel_study(study, wait)
    if studies:
        _end_pilots(folder, studies[0])
    return f"no campaign process was running {folder}"


def _end_pilots(folder: Path, study: Path) -> None:
    """The campaign's pilots serve all of its batches from its own jobs folder: cancelled with the campaign."""
    from legato.execute.pilots import end_pilots
    from legato.launch import _scheduler
    from legato.store import Store

    with Store.of_study(study) as store:
        scheduler = _scheduler(store)
    if scheduler is not None:
        end_pilots(folder / "jobs", scheduler)
