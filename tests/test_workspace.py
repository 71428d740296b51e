"""Where studies and instances live: tree and flat layouts, safe labels, manifests, the study folder."""
from __future__ import annotations

import os
import re
import time
from datetime import datetime
from pathlib import Path

import pytest

from legato import api
from legato.errors import LegatoError
from legato.parameters import ParameterTable
from legato.workspace import MANIFEST, StepLayout, safe_label, study_folder

SAFE = re.compile(r"[-_.()A-Za-z0-9]+")

UNSAFE = [
    "a/b", "../../etc", "..", ".", "", "instances.txt", "ctl\x01\x1f", "new\nline", "tab\there", "x" * 300,
    "space here", "évé", "a?b", "a_b", "/", "-", "$(P)", "a\\b", "x" * 199 + "/",
]

SPEC = """\
description:
  name: {name}
  description: workspace test
{env}
study:
  - name: {step}
    description: uses P
    run:
      cmd: echo $(P)
  - name: after
    description: a funnel
    run:
      cmd: echo done
      depends: [{step}_*]
"""


def write(tmp_path: Path, name: str = "ws", step: str = "run", env: str = "") -> Path:
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC.format(name=name, step=step, env=env))
    return spec


def table_of(values) -> ParameterTable:
    table = ParameterTable()
    table.add("P", values, "%%")
    return table


def tree(root: Path) -> set[Path]:
    return {Path(folder) / name for folder, dirs, files in os.walk(root) for name in dirs + files}


# -- safe labels ----------------------------------------------------------------------------


@pytest.mark.parametrize("label", ["PARAM1.94.PARAM2.71.PARAM3.72", "a-b_c(1)", "SIZE.10", "x" * 200, "-1.5e-3"])
def test_safe_labels_are_kept(label: str) -> None:
    assert safe_label(label) == label


@pytest.mark.parametrize("label", UNSAFE)
def test_unsafe_labels_become_safe_names(label: str) -> None:
    name = safe_label(label)
    assert SAFE.fullmatch(name), name
    assert name not in (".", "..", MANIFEST) and len(name.encode()) <= 200
    assert safe_label(label) == name  # stable: the same label always maps to the same folder


def test_unsafe_labels_stay_distinct() -> None:
    names = [safe_label(label) for label in UNSAFE]
    assert len(set(names)) == len(UNSAFE)


# -- step layouts ---------------------------------------------------------------------------


def test_tree_keeps_maestro_names_up_to_fanout() -> None:
    layout = StepLayout("echo-params", 10, "tree", 10)
    assert [layout.path(i, f"P.{i}") for i in (0, 9)] == ["echo-params/P.0", "echo-params/P.9"]


@pytest.mark.parametrize("count, fanout, depth", [(11, 10, 1), (100, 10, 1), (101, 10, 2), (250, 10, 2), (1001, 1000, 1)])
def test_tree_buckets_beyond_fanout(count: int, fanout: int, depth: int) -> None:
    layout = StepLayout("s", count, "tree", fanout)
    paths = [layout.path(i, f"L{i}") for i in range(count)]
    assert len(set(paths)) == count
    assert {len(Path(p).parts) for p in paths} == {2 + depth}
    children: dict[str, set[str]] = {}
    for path in paths:
        parts = Path(path).parts
        for level in range(1, len(parts)):
            children.setdefault("/".join(parts[:level]), set()).add(parts[level])
    assert max(len(names) for names in children.values()) <= fanout


def test_flat_is_maestro_layout_at_any_size() -> None:
    layout = StepLayout("s", 5000, "flat", 10)
    assert layout.path(4999, "P.4999") == "s/P.4999"
    assert layout.path(0, "") == "s"


@pytest.mark.parametrize("layout, fanout, message", [("deep", 10, "--layout 'deep'"), ("tree", 1, "--fanout 1")])
def test_bad_layout_options(layout: str, fanout: int, message: str) -> None:
    with pytest.raises(LegatoError, match=re.escape(message)):
        StepLayout("s", 3, layout, fanout)


def test_unsafe_step_names_are_made_safe() -> None:
    assert StepLayout("../up", 1).step == safe_label("../up") != "../up"


# -- the study folder -----------------------------------------------------------------------


def test_out_is_used_exactly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert study_folder("/elsewhere", "name", "my study") == tmp_path / "my study"
    assert study_folder(None, "name", str(tmp_path / "x")) == tmp_path / "x"


def test_output_path_gets_a_timestamped_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    before = datetime.fromtimestamp(int(time.time()))
    folder = study_folder("./studies", "my big study", None)
    after = datetime.fromtimestamp(int(time.time()) + 1)
    assert folder.parent == tmp_path / "studies"
    match = re.fullmatch(r"my_big_study_(\d{8}-\d{6})", folder.name)
    assert match, folder.name
    assert before <= datetime.strptime(match.group(1), "%Y%m%d-%H%M%S") <= after
    assert study_folder(None, "n", None).parent == tmp_path


@pytest.mark.parametrize("name, expected", [("a/b c", "ab_c"), ("../../up", "....up"), ("é:x", "x")])
def test_timestamped_folder_name_is_made_safe_as_maestro_does(tmp_path: Path, name: str, expected: str) -> None:
    folder = study_folder(str(tmp_path), name, None)
    assert folder.parent == tmp_path and folder.name.startswith(f"{expected}_")


def test_timestamped_folder_never_reuses_an_existing_one(tmp_path: Path) -> None:
    first = study_folder(str(tmp_path), "n", None)
    first.mkdir()
    second = study_folder(str(tmp_path), "n", None)
    assert second != first and not second.exists() and second.name.startswith(first.name)


# -- prepared studies on disk ---------------------------------------------------------------


def test_tree_on_disk_bounds_every_folder(tmp_path: Path) -> None:
    spec = write(tmp_path)
    study = api.prepare(spec, out=tmp_path / "out", fanout=10, table=table_of([f"v{i}" for i in range(250)]))
    assert study.steps == (("run", 250), ("after", 1))
    step = study.root / "run"
    instance_folders = {Path(line) for line in (step / MANIFEST).read_text().splitlines()}
    assert len(instance_folders) == 250 and all(folder.is_dir() for folder in instance_folders)
    assert {folder.name for folder in instance_folders} == {f"v{i}" for i in range(250)}
    for folder, dirs, _ in os.walk(step):
        assert len(dirs) <= 10, folder
    leaves = {Path(folder) for folder, dirs, _ in os.walk(step) if not dirs}
    assert leaves == instance_folders
    assert (study.root / "after").is_dir() and not (study.root / "after" / MANIFEST).exists()


def test_flat_on_disk_gives_maestro_names(tmp_path: Path) -> None:
    spec = write(tmp_path)
    study = api.prepare(spec, out=tmp_path / "out", layout="flat", fanout=10, table=table_of(range(25)))
    names = {path.name for path in (study.root / "run").iterdir()}
    assert names == {str(i) for i in range(25)} | {MANIFEST}


@pytest.mark.parametrize("layout", ["tree", "flat"])
def test_unsafe_labels_never_leave_the_study(tmp_path: Path, layout: str) -> None:
    spec = write(tmp_path, step="../escape")
    before = tree(tmp_path)
    study = api.prepare(spec, out=tmp_path / "out", layout=layout, fanout=4, table=table_of(UNSAFE))
    outside = {path for path in tree(tmp_path) - before if study.root not in path.parents and path != study.root}
    assert outside == set()
    manifest = study.root / safe_label("../escape") / MANIFEST
    folders = [Path(line) for line in manifest.read_text().splitlines()]
    assert len(set(folders)) == len(UNSAFE)
    for folder in folders:
        assert folder.is_dir() and study.root in folder.parents
        assert SAFE.fullmatch(folder.name) and folder.resolve() == folder


def test_spec_and_pgen_are_copied(sample_dir: Path) -> None:
    study = api.prepare(
        "batched_parameters_demo.yaml", pgen="batched_demo_pgen.py", out="copied",
        pargs=["INDEX:param_combo", "CSV:params.csv", "NROWS:2"],
    )
    assert study.root == sample_dir / "copied"
    for name in ("batched_parameters_demo.yaml", "batched_demo_pgen.py"):
        assert (study.root / name).read_bytes() == (sample_dir / name).read_bytes()


def test_output_path_of_the_spec_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    spec = write(tmp_path, name="timed study", env="env:\n  variables:\n    OUTPUT_PATH: ./results\n")
    study = api.prepare(spec, table=table_of([1]))
    assert study.root.parent == tmp_path / "results"
    assert re.fullmatch(r"timed_study_\d{8}-\d{6}", study.root.name)


def test_existing_out_needs_replace_and_loses_nothing(tmp_path: Path) -> None:
    spec = write(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    with pytest.raises(LegatoError, match="exists and is not empty"):
        api.prepare(spec, out=out, table=table_of([1, 2]))
    assert [p.name for p in out.iterdir()] == ["precious.txt"] and (out / "precious.txt").read_text() == "keep me"
    with pytest.raises(LegatoError, match="not a legato study folder"):
        api.prepare(spec, out=out, replace=True, table=table_of([1, 2]))
    assert (out / "precious.txt").read_text() == "keep me"
    (out / "precious.txt").unlink()
    api.prepare(spec, out=out, table=table_of([1, 2]))
    (out / "run" / "stale.txt").write_text("from the first study")
    study = api.prepare(spec, out=out, replace=True, table=table_of([1, 2]))
    assert not (out / "run" / "stale.txt").exists() and (study.root / "run" / MANIFEST).exists()


def test_existing_empty_out_is_used(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    assert api.prepare(write(tmp_path), out=tmp_path / "out", table=table_of([1])).root == tmp_path / "out"


def test_flat_layout_names_folders_as_maestro_unless_two_would_share_one() -> None:
    from legato.workspace import StepLayout, maestro_label

    labels = ["TEST.{}", "a b", "x/y", "xy", "..", "ok"]
    layout = StepLayout("s", len(labels), "flat", labels=labels)
    names = [layout.path(i, label) for i, label in enumerate(labels)]
    assert names[:2] == ["s/TEST.", "s/a_b"]  # Maestro's make_safe_path: unsafe characters dropped, spaces as _
    assert names[3] == "s/xy" and names[5] == "s/ok"
    assert names[2] == f"s/{safe_label('x/y')}"  # 'xy' is another label's folder: hashed instead
    assert names[4] == f"s/{safe_label('..')}"  # no usable name
    assert len(set(names)) == len(names)
    assert maestro_label("P.1 2:3") == "P.1_23"
    tree = StepLayout("s", len(labels), "tree", labels=labels)
    assert tree.path(0, "TEST.{}") == f"s/{safe_label('TEST.{}')}"
