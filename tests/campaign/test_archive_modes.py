"""Archive modes: a batch workspace as one file, one file per step, one per instance (a light workspace), or copied."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from legato import api
from legato.campaign import archive
from legato.campaign.archive import archive_batch, extract_instance, instance_members, verify_archive
from legato.errors import LegatoError
from legato.store import Store

SPEC = """
description: {name: modes, description: two steps}
study:
  - name: make
    description: writes files
    run:
      cmd: |
        mkdir -p out && echo "$(P)" > out/value.txt && echo x=$(P) > result.kv
  - name: sum
    description: a funnel
    run:
      cmd: cat ../../make/*/out/value.txt > total.txt 2>/dev/null; echo done > total.txt
      depends: [make_*]
global.parameters:
  P: {values: [1, 2, 3], label: P.%%}
"""


@pytest.fixture
def study(tmp_path: Path) -> Path:
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    prepared = api.prepare(str(spec), out=str(tmp_path / "batch-000001"))
    assert api.execute(prepared.root, jobs=2, progress=False).ok
    return Path(prepared.root)


def workspaces(study: Path) -> dict[str, str]:
    with Store.of_study(study) as store:
        return {label: ws for label, ws in store.db.execute("SELECT label, workspace FROM instances")}


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()}


@pytest.mark.parametrize("mode, fmt", [("batch", "tar.gz"), ("batch", "tar.zst"), ("step", "tar.zst"),
                                       ("instance", "tar.gz"), ("instance", "tar.zst"), ("batch", "none")])
def test_every_mode_verifies_lists_and_extracts_one_instance(study, tmp_path, mode, fmt):
    target = tmp_path / "archives"
    done = archive_batch(study, target, mode, fmt)
    verify_archive(done.path, done.sha256)
    assert not list(target.glob("*.partial")) and done.mode == mode and done.format == fmt
    ws = workspaces(study)["P.2"]
    files = dict(instance_members(done.path, ws))
    assert files[f"{ws}/out/value.txt"] == 2 and files[f"{ws}/result.kv"] == 4
    written = extract_instance(done.path, ws, None, str(tmp_path / "back"))
    assert (tmp_path / "back" / ws / "out" / "value.txt").read_text() == "2\n", written
    one = extract_instance(done.path, ws, "result.kv", str(tmp_path / "one"))
    assert [Path(p).relative_to(tmp_path / "one").as_posix() for p in one] == [f"{ws}/result.kv"]
    for info in done.files:
        if info.path.endswith(fmt) and fmt != "none":  # every archive file lists with plain tar
            subprocess.run(["tar", "-tf", os.path.join(done.path, info.path) if mode != "batch" else info.path],
                           check=True, capture_output=True)
    assert archive_batch(study, target, mode, fmt).sha256 == done.sha256 or mode == "batch"


def test_instance_mode_leaves_a_light_workspace(study, tmp_path):
    done = archive_batch(study, tmp_path / "archives", "instance", "tar.zst")
    light = Path(done.path)
    ws = workspaces(study)
    for workspace in ws.values():
        assert (light / f"{workspace}.tar.zst").is_file() and not (light / workspace).exists()
    assert (light / "legato.db").is_file() and (light / archive.MANIFEST).is_file()
    assert done.members == sum(info.members for info in done.files)
    inodes = sum(1 for _ in light.rglob("*"))
    assert inodes < sum(1 for _ in study.rglob("*"))


def test_step_mode_makes_one_file_per_step(study, tmp_path):
    done = archive_batch(study, tmp_path / "archives", "step", "tar.gz")
    packed = sorted(info.path for info in done.files if info.path.endswith(".tar.gz"))
    assert packed == ["make.tar.gz", "sum.tar.gz"]


def test_an_interrupted_copy_is_finished_and_rechecked(study, tmp_path, monkeypatch):
    target = tmp_path / "archives"
    real_copy, calls = archive._copy, []

    def copy_then_crash(source, dest, name):
        calls.append(name)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_copy(source, dest, name)

    monkeypatch.setattr(archive, "_copy", copy_then_crash)
    with pytest.raises(KeyboardInterrupt):
        archive_batch(study, target, "batch", "none")
    assert (target / "batch-000001.partial").is_dir() and not (target / "batch-000001").exists()
    monkeypatch.setattr(archive, "_copy", real_copy)
    done = archive_batch(study, target, "batch", "none")
    assert tree(Path(done.path)) == {**tree(study), archive.MANIFEST: (Path(done.path) / archive.MANIFEST).read_bytes()}


def test_a_damaged_copy_fails_verification(study, tmp_path):
    done = archive_batch(study, tmp_path / "archives", "batch", "none")
    copied = next(Path(done.path).rglob("value.txt"))
    copied.write_text("9\n")
    with pytest.raises(LegatoError, match="is not the recorded"):
        verify_archive(done.path, done.sha256)


def test_bad_mode_combinations(tmp_path):
    with pytest.raises(LegatoError, match="archive mode 'row'"):
        archive.check_archive_options("row", "tar.gz")
    with pytest.raises(LegatoError, match="none copies the workspace file by file; it has no --archive-mode step"):
        archive.check_archive_options("step", "none")
    with pytest.raises(LegatoError, match="not a folder"):
        archive_batch(tmp_path / "missing", tmp_path / "a", "instance", "tar.zst")


def test_a_full_disk_is_a_clear_error_and_no_archive(tmp_path, small_fs):
    """A copy that does not fit ends in one line naming the archive; nothing looks complete."""
    source = tmp_path / "batch-000007"
    (source / "step" / "a").mkdir(parents=True)
    (source / "step" / "a" / "big.bin").write_bytes(os.urandom(3_000_000))
    with pytest.raises(LegatoError, match=f"no space left to write archive {small_fs / 'batch-000007'}"):
        archive_batch(source, small_fs, "batch", "none")
    assert not (small_fs / "batch-000007").exists()
