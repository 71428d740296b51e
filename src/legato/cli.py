"""The ``legato`` command: a thin layer over ``legato.api``.

Maestro's words and flags are accepted where Maestro has them (``run --dry --pgen --pargs
-o -y -n -fg -s -t -a``, ``status``, ``cancel``). Every user mistake ends as one line on
stderr and a non-zero exit; heavy modules are imported only by the commands that need them.
"""
from __future__ import annotations

import sys

import click

from legato.errors import LegatoError

EXIT_ERROR = 2


class _Group(click.Group):
    """Turn usage errors, LegatoError and a full disk into one line instead of a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            hint = f" (see: {exc.ctx.command_path} --help)" if exc.ctx else ""
            click.echo(f"legato: error: {exc.format_message()}{hint}", err=True)
            ctx.exit(EXIT_ERROR)
        except LegatoError as exc:
            click.echo(f"legato: error: {exc}", err=True)
            ctx.exit(EXIT_ERROR)
        except OSError as exc:
            if exc.errno is None or exc.filename is None:
                raise
            click.echo(f"legato: error: {exc.filename}: {exc.strerror}", err=True)
            ctx.exit(EXIT_ERROR)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="legato")
def main() -> None:
    """Run Maestro study specs at scale: parallel, light on the file system, in resumable batches."""


def _study_options(function):
    """Options shared by ``run`` and ``batch``: how a spec becomes a study folder."""
    options = [
        click.option("-p", "--pgen", type=click.Path(dir_okay=False), help="Custom parameter generator (Python file)."),
        click.option("--pargs", multiple=True, metavar="KEY:VALUE", help="Argument for the pgen (repeatable)."),
        click.option("--layout", type=click.Choice(["tree", "flat"]), default="tree", show_default=True,
                     help="tree: buckets instance folders beyond --fanout; flat: Maestro's <step>/<label>/ always."),
        click.option("--fanout", type=click.IntRange(min=2), default=1000, show_default=True,
                     help="Most instance folders in one folder (tree layout)."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def _step_options(function):
    """Which steps run (``run`` and ``batch``); steps outside the selection are not waited for."""
    options = [
        click.option("--only", multiple=True, metavar="STEP", help="Run only this step (repeatable)."),
        click.option("--from", "start", metavar="STEP", help="Run STEP and every step after it."),
        click.option("--until", metavar="STEP", help="Run STEP and every step before it."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def _cluster_options(function):
    """How studies with a scheduler ``batch`` block use it (ignored for local studies)."""
    options = [
        click.option("--pack", type=click.IntRange(min=1), default=100, show_default=True,
                     help="Cluster: instances per chunk, a pilot's unit of work or a job (1: one job per instance, as Maestro)."),
        click.option("--array", is_flag=True, help="Cluster: submit each chunk as a job array."),
        click.option("--job-cores", type=click.IntRange(min=1), help="Cluster: cores per job (default: this machine's)."),
        click.option("--pilots", type=click.IntRange(min=0), default=2, show_default=True,
                     help="Cluster: allocations pulling chunks of --pack instances (at most -t; 0: one job per chunk)."),
        click.option("--job-walltime", callback=_walltime, metavar="WALLTIME",
                     help="Cluster: each pilot's walltime (default: the batch block's, at least an hour)."),
        click.option("-s", "--sleep", type=click.FloatRange(min=0.1), default=5.0, show_default=True,
                     help="Cluster: seconds between scheduler polls (Maestro's -s)."),
        click.option("--local", is_flag=True, help="Run here even if the spec names a scheduler."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def _harvest_options(function):
    """What a results row holds and when it counts as a success, for ``batch`` and ``harvest``."""
    options = [
        click.option("--result", "result_files", multiple=True, metavar="STEP:FILE[:FORMAT]",
                     help="A results file a step writes (json, kv or csv; repeatable)."),
        click.option("--success", "success", multiple=True, metavar="STEP:RULE",
                     help="Success beyond the exit code: exists:FILE, has:KEY or KEY<op>VALUE (repeatable)."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def _walltime(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Checked before any folder is made."""
    from legato.walltime import parse_walltime

    try:
        parse_walltime(value)
    except LegatoError as error:
        raise click.BadParameter(str(error)) from None
    return value


def _cluster(pack: int, array: bool, job_cores: int | None, pilots: int, job_walltime: str | None, sleep: float,
             local: bool):
    from legato.api import ClusterOptions

    return ClusterOptions(pack=pack, array=array, job_cores=job_cores, pilots=pilots, job_walltime=job_walltime,
                          interval=sleep, local=local)


@main.command()
@click.argument("spec", type=click.Path(), required=False)
@_study_options
@click.option("-o", "--out", type=click.Path(file_okay=False), help="Study folder, used exactly (no timestamp).")
@click.option("--dry", is_flag=True, help="Build the workspace and scripts; run nothing.")
@click.option("-j", "--jobs", type=click.IntRange(min=1), help="Cores to keep busy (default: all).")
@click.option("-t", "--throttle", type=click.IntRange(min=0), default=0, help="At most N instances in flight (on a cluster: N jobs queued or running; 0: no limit).")
@click.option("-a", "--attempts", type=click.IntRange(min=1), default=1, show_default=True, help="Tries per instance.")
@click.option("-r", "--rlimit", type=click.IntRange(min=0), default=None, help="Maestro's restart limit (an alias of --attempts - 1).")
@click.option("--resume", "resume_dir", type=click.Path(file_okay=False), help="Finish an interrupted study folder.")
@click.option("--detach", is_flag=True, help="Run the conductor in the background and return at once.")
@click.option("--write-scripts", is_flag=True, help="Also write each instance's script into its folder (debugging).")
@click.option("-y", "yes", is_flag=True, help="Answer yes: replace an existing -o folder.")
@click.option("-n", "no", is_flag=True, help="Answer no to every question.")
@click.option("-fg", "foreground", is_flag=True, help="Maestro compatibility: legato runs in the foreground unless --detach.")
@_cluster_options
@_step_options
@click.option("--rerun", multiple=True, metavar="STEP", help="With --resume: run STEP's instances and their dependents again (repeatable).")
@click.option("--hashws", is_flag=True, hidden=True)
def run(spec, pgen, pargs, layout, fanout, out, dry, jobs, throttle, attempts, rlimit, resume_dir, detach,
        write_scripts, yes, no, foreground, only, start, until, rerun, hashws, **cluster) -> None:
    """Run a study SPEC (or --resume a study folder)."""
    from legato import api
    from legato.selection import StepSelection

    if rlimit is not None:
        attempts = max(attempts, rlimit + 1)
    if rerun and not resume_dir:
        raise click.UsageError("--rerun goes with --resume STUDY_DIR")
    steps = StepSelection(tuple(only), start, until, tuple(rerun))
    if resume_dir:
        result = api.execute(resume_dir, jobs=jobs, throttle=throttle, attempts=attempts, detach=detach,
                             cluster=_cluster(**cluster), steps=steps)
        _finish(result)
        return
    if not spec:
        raise click.UsageError("missing SPEC (or --resume STUDY_DIR)")
    replace = yes or (out is not None and not no and _confirm_replace(out))
    study = api.prepare(spec, pgen=pgen, pargs=pargs, out=out, layout=layout, fanout=fanout,
                        replace=replace, write_scripts=write_scripts, steps=steps)
    _print_plan(study)
    if dry:
        click.echo(f"dry run: {study.total} instance{'s' if study.total != 1 else ''} prepared in {study.root}; nothing ran")
        return
    _finish(api.execute(study.root, jobs=jobs, throttle=throttle, attempts=attempts, detach=detach,
                        cluster=_cluster(**cluster), steps=steps))


def _confirm_replace(out: str) -> bool:
    """Maestro asks before replacing an -o folder; legato asks only on a terminal."""
    from pathlib import Path

    folder = Path(out)
    if not (folder.is_dir() and any(folder.iterdir())) or not sys.stdin.isatty():
        return False
    return click.confirm(f"{folder} exists. Replace it?", default=False)


def _print_plan(study) -> None:
    for warning in study.warnings:
        click.echo(f"legato: warning: {warning}", err=True)
    click.echo(f"study folder: {study.root}")
    for name, count in study.steps:
        click.echo(f"  {name}: {count} instance{'s' if count != 1 else ''}")


def _finish(result) -> None:
    """Print a run's outcome; a study with failures exits non-zero."""
    for line in result.summary():
        click.echo(line)
    if not result.ok:
        sys.exit(1)


@main.command()
@click.argument("spec", type=click.Path())
@click.option("-p", "--pgen", type=click.Path(dir_okay=False), help="Custom parameter generator (Python file).")
@click.option("--pargs", multiple=True, metavar="KEY:VALUE", help="Argument for the pgen (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable report on stdout (for editors and CI).")
def validate(spec, pgen, pargs, as_json) -> None:
    """Check SPEC as a dry run would, writing nothing; exit 1 when it would be rejected."""
    import json

    from legato import api

    report = api.validate(spec, pgen=pgen, pargs=pargs)
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        for warning in report.warnings:
            click.echo(f"legato: warning: {warning}", err=True)
        for error in report.errors:
            click.echo(f"legato: error: {error}", err=True)
        if report.ok:
            click.echo(f"{spec}: valid: {sum(report.steps.values())} instances of {len(report.steps)} steps")
    if not report.ok:
        sys.exit(1)


@main.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.option("--state", "states", multiple=True, help="List the instances in this state (repeatable).")
@click.option("--step", "steps", multiple=True, help="List the instances of this step (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--csv", "as_csv", is_flag=True, help="Maestro's status.csv columns on stdout.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="List at most N instances.")
def status(folder, states, steps, as_json, as_csv, limit) -> None:
    """Show the state of a study (or a campaign) FOLDER."""
    from legato import status as status_view

    status_view.show(folder, states=states, steps=steps, as_json=as_json, as_csv=as_csv, limit=limit)


@main.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.option("-y", "yes", is_flag=True, help="Maestro compatibility: legato does not ask.")
def cancel(folder, yes) -> None:
    """Stop the conductor of a study (or campaign) FOLDER and terminate its running instances."""
    from legato import api

    click.echo(api.cancel(folder))


@main.command("batch")
@click.argument("spec", type=click.Path(), required=False)
@_study_options
@click.option("-b", "--batch-size", type=click.IntRange(min=1), help="Rows per batch.")
@click.option("-o", "--out", type=click.Path(file_okay=False), help="Campaign folder, used exactly.")
@click.option("--rows", help="Row source: a CSV file, sqlite:///f.db?table=T or postgresql://...?table=T|query=...")
@click.option("--index", help="Index column of --rows: names each row in the results, is no parameter.")
@click.option("--max-rows", type=click.IntRange(min=1), help="Stop after this many rows.")
@click.option("--strict-values", is_flag=True,
              help="Refuse row values holding shell syntax ($(, `, ;, |, &, <, >, newlines): for rows others write.")
@click.option("--results", "results_url", help="Results database URL (default: results.db in the campaign folder).")
@_harvest_options
@click.option("--archive", type=click.Path(file_okay=False), help="Folder for batch archives (default: archives/ in the campaign).")
@click.option("--archive-format", type=click.Choice(["tar.gz", "tar.zst", "none"]), default="tar.gz", show_default=True,
              help="none: copy the files to --archive without tar, checked by SHA-256.")
@click.option("--archive-mode", type=click.Choice(["batch", "step", "instance"]), default="batch", show_default=True,
              help="One archive file per batch, per step of a batch, or per instance (a light workspace kept in --archive).")
@click.option("--no-archive", is_flag=True, help="Only harvest, then delete each batch workspace.")
@click.option("--keep-workspace", is_flag=True, help="Keep each batch workspace after archiving.")
@click.option("--keep-failed", is_flag=True, help="Copy failed instances' folders to failed/ in the campaign.")
@click.option("--on-failure", type=click.Choice(["continue", "stop"]), default="continue", show_default=True)
@click.option("-w", "--window", type=click.IntRange(min=1), default=2, show_default=True,
              help="Batch workspaces on disk at once: the next batch is set up while this many are running or being "
                   "harvested and archived.")
@click.option("--min-free", help="Free space each batch on disk needs; checked before a batch workspace is made.  [default: 1G]")
@click.option("--min-inodes", type=click.IntRange(min=0), help="Free inodes each batch on disk needs.  [default: 100000]")
@click.option("-j", "--jobs", type=click.IntRange(min=1), help="Cores to keep busy (default: all).")
@click.option("-t", "--throttle", type=click.IntRange(min=0), default=0, help="At most N instances in flight (on a cluster: N jobs queued or running; 0: no limit).")
@click.option("-a", "--attempts", type=click.IntRange(min=1), default=1, show_default=True, help="Tries per instance.")
@click.option("--resume", "resume_dir", type=click.Path(file_okay=False), help="Continue a campaign folder.")
@click.option("--retry-failed", is_flag=True, help="With --resume: run the failed rows again.")
@click.option("--detach", is_flag=True, help="Run the campaign driver in the background and return at once.")
@_step_options
@_cluster_options
def batch_command(spec, pgen, pargs, layout, fanout, batch_size, out, rows, index, max_rows, strict_values, results_url,
                  result_files, archive, archive_format, archive_mode, no_archive, keep_workspace, success, keep_failed,
                  on_failure, window, min_free, min_inodes, jobs, throttle, attempts, resume_dir, retry_failed, detach,
                  only, start, until, **cluster) -> None:
    """Run SPEC over many parameter rows, --batch-size rows at a time: run, harvest, archive, clean.

    Batches overlap: one executor serves the whole campaign, the next batch is set up while the
    current one runs, and finished batches are harvested, archived and removed in the background.
    """
    from legato import api
    from legato.campaign.options import CampaignOptions
    from legato.campaign.diskguard import parse_size

    execution = {"jobs": jobs, "throttle": throttle, "attempts": attempts, "cluster": _cluster(**cluster)}
    if resume_dir:
        if only or start or until:
            raise click.UsageError("--only/--from/--until are kept with the campaign; they cannot change on --resume")
        guard = {"min_free": parse_size(min_free)} if min_free else {}
        guard.update({"min_inodes": min_inodes} if min_inodes is not None else {})
        outcome = api.resume_batch(resume_dir, execution=execution, retry_failed=retry_failed, guard=guard,
                                   detach=detach, log=click.echo)
    else:
        if not spec or not batch_size:
            raise click.UsageError("legato batch needs SPEC and --batch-size (or --resume CAMPAIGN_DIR)")
        if retry_failed:
            raise click.UsageError("--retry-failed goes with --resume CAMPAIGN_DIR")
        options = CampaignOptions(
            spec=spec, batch_size=batch_size, pgen=pgen, pargs=list(pargs), rows=rows, index=index, max_rows=max_rows,
            results=results_url, result_files=list(result_files), archive=archive, archive_format=archive_format,
            archive_mode=archive_mode, no_archive=no_archive, keep_workspace=keep_workspace, success=list(success),
            keep_failed=keep_failed, on_failure=on_failure, window=window,
            min_free=parse_size(min_free or "1G"),
            min_inodes=100_000 if min_inodes is None else min_inodes, layout=layout, fanout=fanout,
            only=list(only), start=start, until=until,
            strict_values=strict_values,
        )
        outcome = api.batch(options, out=out, execution=execution, detach=detach, log=click.echo)
    _finish(outcome)


@main.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@_harvest_options
@click.option("--results", "results_url", help="Results database URL (default: results.db in FOLDER).")
@click.option("--name", help="Campaign name of the rows (default: the folder's name).")
def harvest(folder, result_files, results_url, success, name) -> None:
    """Harvest a legato or Maestro study FOLDER into a results table (again: replaces, never adds)."""
    from legato import api

    written, failed = api.harvest(folder, list(result_files), results_url, list(success), name)
    click.echo(f"{written} rows harvested ({failed} failed) from {folder}")


@main.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, allow_dash=True), help="Write CSV to FILE (-: standard output).")
@click.option("--parquet", "parquet_path", type=click.Path(dir_okay=False), help="Write Parquet to FILE.")
@click.option("--json", "as_json", is_flag=True, help="A JSON array of rows on standard output.")
@click.option("--failed", is_flag=True, help="Only the rows that did not finish.")
def results(folder, csv_path, parquet_path, as_json, failed) -> None:
    """Show or export the results of a campaign FOLDER (or the instances of a study folder).

    On a terminal: a table (the first and last rows of a large one); piped: CSV.
    """
    from legato import api

    chosen = [name for name, given in (("--csv", csv_path), ("--parquet", parquet_path), ("--json", as_json)) if given]
    if len(chosen) > 1:
        raise click.UsageError(f"give one of --csv, --parquet or --json, not {' and '.join(chosen)}")
    path, fmt = (csv_path, "csv") if csv_path else (parquet_path, "parquet") if parquet_path else ("-", "json" if as_json else None)
    if fmt is None and sys.stdout.isatty():
        api.show_results(folder, failed=failed)
        return
    count = api.export_results(folder, path, fmt or "csv", failed=failed)
    if path != "-":
        click.echo(f"{count} rows written to {path}")


@main.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.option("-o", "--out", type=click.Path(dir_okay=False), help="The HTML file.  [default: FOLDER/report.html]")
def report(folder, out) -> None:
    """Write one self-contained HTML page about a campaign (or study) FOLDER: summary, charts, failures."""
    from legato import api

    click.echo(f"report written to {api.report(folder, out)}")


@main.group()
def archive() -> None:
    """Look into a campaign's batch archives."""


@archive.command("ls")
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.argument("label", required=False)
def archive_ls(folder, label) -> None:
    """List the archives of a campaign FOLDER, or the files of one instance LABEL."""
    from legato import api

    for line in api.archive_list(folder, label):
        click.echo(line)


@archive.command("get")
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.argument("label")
@click.argument("file", required=False)
@click.option("-d", "--dest", type=click.Path(file_okay=False), default=".", show_default=True, help="Where to put them.")
def archive_get(folder, label, file, dest) -> None:
    """Bring back the files of instance LABEL (or just FILE) from a campaign FOLDER's archives."""
    from legato import api

    for path in api.archive_get(folder, label, file, dest):
        click.echo(path)
