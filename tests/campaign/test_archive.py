"""Batch archives: written, verified, listed and extracted; damage, escapes and full disks refused."""
from __future__ import annotations

import errno
import io
import os
import subprocess
import tarfile

import pytest

from legato.campaign import archive
from legato.campaign.archive import extract, list_members, verify_archive, write_archive
from legato.errors import LegatoError

FORMATS = ["tar.gz", "tar.zst"]
LABEL = "PARAM1.94.PARAM2.71.PARAM3.72"


@pytest.fixture
def batch_dir(tmp_path) -> str:
    """A small batch workspace: two instances, nested output, a symlink, an empty and a random binary file."""
    root = tmp_path / "batch"
    for label, value in ((LABEL, "94"), ("PARAM1.48.PARAM2.18.PARAM3.60", "48")):
        folder = root / "echo-params" / label
        folder.mkdir(parents=True)
        (folder / "params.txt").write_text(f"PARAM1={value}\n")
        (folder / "out").mkdir()
        (folder / "out" / "empty.dat").write_bytes(b"")
        (folder / "latest").symlink_to("params.txt")
    (root / "echo-params" / LABEL / "out" / "blob.bin").write_bytes(os.urandom(300_000) + bytes(700_000))
    (root / ("x" * 120)).write_text("a long member name")
    return str(root)


def tree(root: str) -> dict[str, object]:
    """Every path under root: file bytes, link targets, or 'dir'."""
    found: dict[str, object] = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(folder, name)
            relative = os.path.relpath(path, root)
            if os.path.islink(path):
                found[relative] = ("link", os.readlink(path))
            elif os.path.isdir(path):
                found[relative] = "dir"
            else:
                found[relative] = open(path, "rb").read()
    return found


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip(batch_dir, tmp_path, fmt):
    dest = str(tmp_path / "archives" / f"batch-0.{fmt}")
    info = write_archive(batch_dir, dest, fmt)
    assert info.path == dest and os.path.getsize(dest) == info.bytes and not os.path.exists(dest + ".partial")
    assert info.members == len(tree(batch_dir)) == 13
    verify_archive(dest, info.sha256)
    members = dict(list_members(dest))
    assert members[f"echo-params/{LABEL}/params.txt"] == len("PARAM1=94\n")
    assert members[f"echo-params/{LABEL}/out/blob.bin"] == 1_000_000
    assert list_members(dest, f"echo-params/{LABEL}/params.txt") == [(f"echo-params/{LABEL}/params.txt", 10)]
    assert len(list_members(dest, f"echo-params/{LABEL}/")) == 6
    everything = tmp_path / "everything"
    extract(dest, "", str(everything))
    assert tree(str(everything)) == tree(batch_dir)
    one = tmp_path / "one"
    written = extract(dest, f"echo-params/{LABEL}", str(one))
    assert str(one / "echo-params" / LABEL / "out" / "blob.bin") in written
    assert sorted(tree(str(one / "echo-params"))) == sorted(
        name[len("echo-params/"):] for name in tree(batch_dir) if name.startswith(f"echo-params/{LABEL}"))
    assert os.readlink(one / "echo-params" / LABEL / "latest") == "params.txt"


@pytest.mark.parametrize("fmt", FORMATS)
def test_damaged_archives_fail(batch_dir, tmp_path, fmt):
    dest = str(tmp_path / f"b.{fmt}")
    info = write_archive(batch_dir, dest, fmt)
    data = open(dest, "rb").read()
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0xFF
    (tmp_path / "flipped").write_bytes(bytes(flipped))
    (tmp_path / "cut").write_bytes(data[: len(data) * 2 // 3])
    for damaged in ("flipped", "cut"):
        with pytest.raises(LegatoError, match="is not the recorded"):
            verify_archive(str(tmp_path / damaged), info.sha256)
        with pytest.raises(LegatoError, match="damaged or truncated"):
            list_members(str(tmp_path / damaged))
    with pytest.raises(LegatoError, match="missing.tar.gz: No such file"):
        verify_archive(str(tmp_path / "missing.tar.gz"), info.sha256)


@pytest.mark.parametrize("damage, problem", [
    ("flip", r"damaged|what was read back is not what was written"),
    ("cut", r"truncated|tar failed"),
])
def test_a_verification_mismatch_removes_the_partial(batch_dir, tmp_path, monkeypatch, damage, problem):
    real_pack = archive._pack

    def pack_then_damage(source_dir, partial, dest, fmt, names):
        written = real_pack(source_dir, partial, dest, fmt, names)
        data = open(partial, "rb").read()
        flipped = bytearray(data)
        flipped[len(data) // 2] ^= 0xFF
        open(partial, "wb").write(bytes(flipped) if damage == "flip" else data[: len(data) // 2])
        return written

    monkeypatch.setattr(archive, "_pack", pack_then_damage)
    dest = tmp_path / "b.tar.gz"
    with pytest.raises(LegatoError, match=problem):
        write_archive(batch_dir, str(dest))
    assert os.listdir(tmp_path) == ["batch"]


def test_archives_list_with_plain_tar(batch_dir, tmp_path):
    for fmt in FORMATS:
        info = write_archive(batch_dir, str(tmp_path / f"b.{fmt}"), fmt)
        listed = subprocess.run(["tar", "-tf", info.path], capture_output=True, text=True, check=True).stdout.split()
        assert len(listed) == info.members == 13


def malicious(path, name: str, linkname: str = "", kind: bytes = tarfile.REGTYPE, then: str = "") -> str:
    with tarfile.open(path, "w:gz") as tar:
        member = tarfile.TarInfo(name)
        member.type, member.linkname = kind, linkname
        tar.addfile(member, io.BytesIO(b"") if kind == tarfile.REGTYPE else None)
        if then:
            payload = tarfile.TarInfo(then)
            payload.size = 4
            tar.addfile(payload, io.BytesIO(b"evil"))
    return str(path)


@pytest.mark.parametrize("name, linkname, kind, then", [
    ("../escaped.txt", "", tarfile.REGTYPE, ""),
    ("/tmp/legato-escaped.txt", "", tarfile.REGTYPE, ""),
    ("a/../../escaped.txt", "", tarfile.REGTYPE, ""),
    ("up", "..", tarfile.SYMTYPE, "up/escaped.txt"),
    ("abs", "/tmp", tarfile.SYMTYPE, "abs/legato-escaped.txt"),
    ("hard", "/etc/hostname", tarfile.LNKTYPE, ""),
])
def test_members_escaping_the_destination_are_refused(tmp_path, name, linkname, kind, then):
    path = malicious(tmp_path / "evil.tar.gz", name, linkname, kind, then)
    dest = tmp_path / "dest"
    with pytest.raises(LegatoError, match="refusing member"):
        extract(path, "", str(dest))
    assert not (tmp_path / "escaped.txt").exists() and not os.path.exists("/tmp/legato-escaped.txt")


@pytest.fixture
def tiny_fs(tmp_path):
    """A 256 KiB tmpfs when we may mount one; else None (the test then fakes ENOSPC)."""
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount_point)],
                                           capture_output=True).returncode:
        yield None
        return
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_full_disk_is_a_clear_error(batch_dir, tiny_fs, tmp_path, monkeypatch, fmt):
    if tiny_fs is None:
        real_open = open

        def open_full(path, mode="r", *args, **kwargs):
            stream = real_open(path, mode, *args, **kwargs)
            if str(path).endswith(".partial"):
                def no_room(data):
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
                stream.write = no_room
            return stream

        monkeypatch.setattr(archive, "open", open_full, raising=False)
        folder = tmp_path / "full"
    else:
        folder = tiny_fs
    dest = folder / f"batch-0.{fmt}"
    with pytest.raises(LegatoError, match=f"no space left to write archive {dest}"):
        write_archive(batch_dir, str(dest), fmt)
    assert not os.path.exists(dest) and not os.path.exists(f"{dest}.partial")


def test_user_mistakes(batch_dir, tmp_path):
    with pytest.raises(LegatoError, match="archive format 'zip'"):
        write_archive(batch_dir, str(tmp_path / "b.zip"), "zip")
    with pytest.raises(LegatoError, match="not a folder"):
        write_archive(str(tmp_path / "nothing"), str(tmp_path / "b.tar.gz"))
    info = write_archive(batch_dir, str(tmp_path / "b.tar.gz"))
    with pytest.raises(LegatoError, match="nothing under 'echo-params/NOPE'"):
        extract(info.path, "echo-params/NOPE", str(tmp_path / "out"))
    (tmp_path / "plain.txt").write_text("not an archive")
    with pytest.raises(LegatoError, match="not a tar.gz or tar.zst file"):
        list_members(str(tmp_path / "plain.txt"))


def test_an_empty_folder_makes_an_empty_archive(tmp_path):
    (tmp_path / "empty").mkdir()
    info = write_archive(str(tmp_path / "empty"), str(tmp_path / "e.tar.zst"), "tar.zst")
    assert info.members == 0 and list_members(info.path) == []
