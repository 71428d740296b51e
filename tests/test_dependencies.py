"""``env.dependencies``: paths checked before any folder exists, git repositories cloned into the study."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from legato import api
from legato.errors import LegatoError
from tests.test_cli_dry import assert_one_line_error, legato

HEAD = "description: {name: deps, description: d}\n"
STEP = "study:\n  - {name: build, description: d, run: {cmd: cat $(REPO)/VERSION}}\n"


def git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", "-c", "user.email=t@example.org", "-c", "user.name=t", *args], cwd=cwd, check=True,
                   capture_output=True)


@pytest.fixture
def origin(tmp_path: Path) -> Path:
    """A repository with a tag ``v1`` (VERSION 1) and a later commit (VERSION 2)."""
    repo = tmp_path / "origin"
    repo.mkdir()
    git("init", "-q", cwd=repo)
    (repo / "VERSION").write_text("1\n")
    git("add", "VERSION", cwd=repo)
    git("commit", "-qm", "one", cwd=repo)
    git("tag", "v1", cwd=repo)
    (repo / "VERSION").write_text("2\n")
    git("commit", "-qam", "two", cwd=repo)
    return repo


def git_spec(url: str, extra: str = "") -> str:
    return HEAD + f"env:\n  dependencies:\n    git:\n      - {{name: REPO, path: $(OUTPUT_PATH), url: '{url}'{extra}}}\n" + STEP


def test_git_dependency_is_cloned_into_the_study_at_its_tag(write_spec, origin: Path, tmp_path: Path) -> None:
    study = api.prepare(write_spec(git_spec(str(origin), ", tag: v1")), out=tmp_path / "out")
    assert (study.root / "REPO" / "VERSION").read_text() == "1\n"
    outcome = api.execute(study.root, jobs=1)
    assert outcome.counts["finished"] == 1
    assert (study.root / "build" / "build.out").read_text() == "1\n"


def test_git_dependency_without_revision_is_the_default_branch(write_spec, origin: Path, tmp_path: Path) -> None:
    study = api.prepare(write_spec(git_spec(str(origin))), out=tmp_path / "out")
    assert (study.root / "REPO" / "VERSION").read_text() == "2\n"


@pytest.mark.parametrize("url, extra, reason", [
    ("{missing}", "", "git clone failed"),
    ("{origin}", ", tag: v9", "git checkout failed"),
])
def test_failed_clone_is_named_and_leaves_no_folder(write_spec, origin: Path, tmp_path: Path, url, extra, reason):
    spec = write_spec(git_spec(url.format(missing=tmp_path / "nowhere.git", origin=origin), extra))
    done = legato("run", "--dry", str(spec), "-o", "out", cwd=tmp_path)
    assert_one_line_error(done, "spec.yaml: env.dependencies.git[0] (REPO): ", reason)
    assert not (tmp_path / "out").exists()


def test_missing_path_dependency_is_an_error_before_any_folder(write_spec, tmp_path: Path) -> None:
    spec = write_spec(HEAD + "env:\n  dependencies:\n    paths:\n      - {name: INPUTS, path: $(SPECROOT)/inputs}\n"
                      + "study:\n  - {name: s, description: d, run: {cmd: ls $(INPUTS)}}\n")
    done = legato("run", "--dry", str(spec), "-o", "out", cwd=tmp_path)
    assert_one_line_error(done, "spec.yaml: env.dependencies.paths[0]: the path ", "inputs' of 'INPUTS' does not exist")
    assert not (tmp_path / "out").exists()
    (tmp_path / "inputs").mkdir()
    study = api.prepare(spec, out=tmp_path / "out")
    assert study.total == 1


def test_rejected_launcher_names_spec_and_step_and_leaves_no_folder(write_spec, tmp_path: Path) -> None:
    spec = write_spec(HEAD + "batch: {type: slurm, nodes: 1, procs: 4}\nstudy:\n"
                      + "  - {name: ok, description: d, run: {cmd: echo, procs: 1}}\n"
                      + "  - {name: par, description: d, run: {cmd: '$(LAUNCHER)[1p, 2p] ./a', procs: 2}}\n")
    done = legato("run", "--dry", str(spec), "-o", "out", cwd=tmp_path)
    assert_one_line_error(done, "spec.yaml: step 'par': run.cmd: $(LAUNCHER)[1p, 2p] is not one of the forms")
    assert not (tmp_path / "out").exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(LegatoError):
        api.prepare(spec, out=tmp_path / "empty")
    assert list((tmp_path / "empty").iterdir()) == []  # an empty -o folder given is left as it was
