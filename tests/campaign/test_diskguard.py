"""Free space and inode checks, and the --min-free size syntax."""
from __future__ import annotations

import os

import pytest

from legato.campaign import diskguard
from legato.campaign.diskguard import check_room, parse_size
from legato.errors import LegatoError


@pytest.mark.parametrize("text, expected", [
    ("0", 0), ("1000", 1000), ("5G", 5 * 1024**3), ("512m", 512 * 1024**2), ("1.5T", int(1.5 * 1024**4)),
    ("2K", 2048), ("10GB", 10 * 1024**3), ("3 GiB", 3 * 1024**3), (" 7M ", 7 * 1024**2),
])
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("junk", ["", "G", "5X", "-1G", "five", "1.2.3G", "5 G B"])
def test_parse_size_refuses_junk(junk):
    with pytest.raises(LegatoError, match="expected a number"):
        parse_size(junk)


def test_enough_room_passes_and_missing_folders_use_their_parent(tmp_path):
    check_room([str(tmp_path), str(tmp_path / "not" / "yet" / "made")], 0, 0)


def test_too_little_space_or_inodes_names_the_file_system(tmp_path):
    with pytest.raises(LegatoError, match=rf"not enough room on {tmp_path}: .* free, --min-free is 1024.0 TiB"):
        check_room([str(tmp_path / "batch-7")], 1024**5, 0)
    with pytest.raises(LegatoError, match=rf"not enough inodes on {tmp_path}: \d+ free, --min-inodes is 10\d+"):
        check_room([str(tmp_path)], 0, 10**15)


def fake_statvfs(files: int, favail: int, bavail: int = 10**6):
    return os.statvfs_result((4096, 4096, 10**7, 10**6, bavail, files, favail, favail, 0, 255))


def test_file_systems_without_inode_counts_skip_that_check(tmp_path, monkeypatch):
    monkeypatch.setattr(diskguard.os, "statvfs", lambda path: fake_statvfs(files=0, favail=0))
    check_room([str(tmp_path)], 4096 * 10**6, 10**9)
    monkeypatch.setattr(diskguard.os, "statvfs", lambda path: fake_statvfs(files=100, favail=5))
    with pytest.raises(LegatoError, match="5 free, --min-inodes is 6"):
        check_room([str(tmp_path)], 0, 6)
    with pytest.raises(LegatoError, match="3.8 GiB free, --min-free is 5.0 GiB"):
        check_room([str(tmp_path)], parse_size("5G"), 0)
