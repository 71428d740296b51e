"""One verified compressed tar per batch, and fetching one instance's files back from it.

The campaign deletes a batch's workspace right after archiving it, so an archive is trusted
only once it has been read back in full: every file's size and SHA-256 (taken while it was
packed) match, every folder and symlink is there, nothing else is. Until then it is
``<dest>.partial``; the rename to ``dest`` (with the folder synced) is what a resumed campaign
looks for, and the archive's own SHA-256 lets it re-check a finished archive cheaply.

Archives are streamed both ways (``tar`` stream mode over gzip or zstandard), so memory stays
flat whatever the batch size. Symlinks are stored as links, never followed; hard links are
stored as separate copies; sockets, FIFOs and devices are skipped (they hold no results).
"""
from __future__ import annotations

import errno
import gzip
import hashlib
import os
import tarfile
import zlib
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import IO, Iterator, NoReturn

import zstandard

from legato.errors import LegatoError

FORMATS = ("tar.gz", "tar.zst")
_GZIP_MAGIC, _ZSTD_MAGIC = b"\x1f\x8b", b"\x28\xb5\x2f\xfd"
_CHUNK = 1 << 20
_ZSTD_IN = 1024
"""Compressed bytes per zstd step: one step then inflates to at most ~32 MiB, even for runs of zeros."""
_DAMAGE = (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, zstandard.ZstdError)


@dataclass(frozen=True)
class ArchiveInfo:
    """A finished archive: where, its SHA-256 (for ``verify_archive``), member count and size in bytes."""

    path: str
    sha256: str
    members: int
    bytes: int


@dataclass(frozen=True)
class _Entry:
    """What verification expects of one member: kind, size, and SHA-256 (files) or target (symlinks)."""

    kind: str
    size: int = 0
    check: str = ""


def write_archive(source_dir: str, dest: str, fmt: str = "tar.gz") -> ArchiveInfo:
    """Pack ``source_dir`` (member names relative to it) into ``dest``, verified before it gets its final name."""
    if fmt not in FORMATS:
        raise LegatoError(f"archive format {fmt!r}: expected one of {', '.join(FORMATS)}")
    if not os.path.isdir(source_dir):
        raise LegatoError(f"cannot archive {source_dir}: not a folder")
    folder = os.path.dirname(os.path.abspath(dest))
    partial = f"{dest}.partial"
    try:
        os.makedirs(folder, exist_ok=True)
        expected = _pack(source_dir, partial, fmt)
        digest = _verify(partial, dest, expected)
        os.replace(partial, dest)
        _fsync_dir(folder)
    except BaseException as exc:
        _remove(partial)
        if isinstance(exc, OSError):
            raise _write_error(exc, dest, partial) from None
        raise
    return ArchiveInfo(dest, digest, len(expected), os.path.getsize(dest))


def verify_archive(path: str, sha256: str) -> None:
    """Re-check a finished archive against the SHA-256 recorded when it was verified in full."""
    hasher = hashlib.sha256()
    try:
        with open(path, "rb") as stream:
            while chunk := stream.read(_CHUNK):
                hasher.update(chunk)
    except OSError as exc:
        raise LegatoError(f"archive {path}: {exc.strerror}") from None
    if hasher.hexdigest() != sha256:
        raise LegatoError(f"archive {path}: SHA-256 {hasher.hexdigest()} is not the recorded {sha256}: it is damaged or was changed")


def list_members(path: str, prefix: str = "") -> list[tuple[str, int]]:
    """(name, size) of every member at or under ``prefix`` (a folder or file name relative to the archived folder)."""
    with _reading(path) as (tar, _):
        return [(member.name, member.size) for member in tar if _under(member.name, prefix)]


def extract(path: str, prefix: str, dest_dir: str) -> list[str]:
    """Bring back the members at or under ``prefix`` into ``dest_dir``; members that would land outside it are refused."""
    written: list[str] = []
    try:
        os.makedirs(dest_dir, exist_ok=True)
        with _reading(path) as (tar, _):
            for member in tar:
                if _under(member.name, prefix):
                    _extract_one(tar, member, path, dest_dir)
                    written.append(os.path.join(dest_dir, member.name))
    except OSError as exc:
        raise LegatoError(f"cannot extract into {dest_dir}: {exc.strerror or exc}") from None
    if not written:
        raise LegatoError(f"archive {path}: nothing under {prefix!r}")
    return written


def _extract_one(tar: tarfile.TarFile, member: tarfile.TarInfo, path: str, dest_dir: str) -> None:
    """The ``data`` filter refuses paths and links that resolve outside; it would strip a leading ``/``: refuse that too."""
    if member.name.startswith("/"):
        raise LegatoError(f"archive {path}: refusing member {member.name!r}: it would land outside {dest_dir}")
    try:
        tar.extract(member, dest_dir, filter="data")
    except tarfile.FilterError as exc:
        raise LegatoError(f"archive {path}: refusing member {member.name!r}: {exc}") from None


def _under(name: str, prefix: str) -> bool:
    prefix = prefix.strip("/")
    return not prefix or name == prefix or name.startswith(prefix + "/")


def _pack(source_dir: str, partial: str, fmt: str) -> dict[str, _Entry]:
    """Write the tar and return what each member must look like when read back."""
    expected: dict[str, _Entry] = {}
    with open(partial, "wb") as raw:
        with _compressing(raw, fmt) as packed, tarfile.open(fileobj=packed, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            for path, name in _walk(source_dir):
                entry = _add(tar, path, name)
                if entry is not None:
                    expected[name] = entry
        raw.flush()
        os.fsync(raw.fileno())
    return expected


@contextmanager
def _compressing(raw: IO[bytes], fmt: str) -> Iterator[gzip.GzipFile | zstandard.ZstdCompressionWriter]:
    """A compressing writer over ``raw`` that leaves ``raw`` open, so it can be fsynced."""
    if fmt == "tar.gz":
        with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0) as packed:
            yield packed
    else:
        compressor = zstandard.ZstdCompressor(level=3, threads=-1, write_checksum=True)
        with compressor.stream_writer(raw, closefd=False) as packed:
            yield packed


def _walk(root: str) -> Iterator[tuple[str, str]]:
    """(path, member name) depth first in name order, each folder before its contents; symlinks are not followed."""
    pending = [""]
    while pending:
        relative = pending.pop()
        with os.scandir(os.path.join(root, relative)) as entries:
            children = sorted(entries, key=lambda entry: entry.name)
        folders = []
        for entry in children:
            name = f"{relative}/{entry.name}" if relative else entry.name
            yield entry.path, name
            if entry.is_dir(follow_symlinks=False):
                folders.append(name)
        pending.extend(reversed(folders))


def _add(tar: tarfile.TarFile, path: str, name: str) -> _Entry | None:
    info = tar.gettarinfo(path, arcname=name)
    if info is None or not (info.isreg() or info.islnk() or info.isdir() or info.issym()):
        return None
    if info.isdir():
        tar.addfile(info)
        return _Entry("dir")
    if info.issym():
        tar.addfile(info)
        return _Entry("symlink", check=info.linkname)
    info.type, info.linkname, info.size = tarfile.REGTYPE, "", os.lstat(path).st_size
    with open(path, "rb") as stream:
        hashing = _Hashing(stream)
        tar.addfile(info, hashing)
    return _Entry("file", info.size, hashing.hexdigest())


def _verify(partial: str, dest: str, expected: dict[str, _Entry]) -> str:
    """Read the whole archive back against ``expected``; returns the archive's SHA-256."""
    found: set[str] = set()
    with _reading(partial, name=dest) as (tar, whole_file):
        for member in tar:
            entry = expected.get(member.name)
            if entry is None or member.name in found:
                _mismatch(dest, member.name, "unexpected or repeated member")
            found.add(member.name)
            _check_member(tar, member, entry, dest)
        missing = sorted(set(expected) - found)
        if missing:
            _mismatch(dest, missing[0], f"missing ({len(missing)} members missing)")
    return whole_file.hexdigest()


def _check_member(tar: tarfile.TarFile, member: tarfile.TarInfo, entry: _Entry, dest: str) -> None:
    if member.isdir() != (entry.kind == "dir") or member.issym() != (entry.kind == "symlink"):
        _mismatch(dest, member.name, f"stored as the wrong kind (expected {entry.kind})")
    if member.issym() and member.linkname != entry.check:
        _mismatch(dest, member.name, "symlink target differs")
    if member.isfile():
        stream = tar.extractfile(member)
        assert stream is not None
        hashing = _Hashing(stream)
        size = 0
        while chunk := hashing.read(_CHUNK):
            size += len(chunk)
        if size != entry.size or member.size != entry.size:
            _mismatch(dest, member.name, f"{size} bytes read back, {entry.size} packed")
        if hashing.hexdigest() != entry.check:
            _mismatch(dest, member.name, "content checksum differs")


def _mismatch(dest: str, name: str, problem: str) -> NoReturn:
    raise LegatoError(f"archive {dest} failed verification: {name}: {problem}")


@contextmanager
def _reading(path: str, name: str | None = None) -> Iterator[tuple[tarfile.TarFile, _Hashing]]:
    """The archive as a stream-mode tar; damage (truncation, bad data, bad checksums) becomes a LegatoError.

    Every byte of the file passes through one hash on the way, and both the decompressed and the
    raw stream are read to their ends on leaving, so trailers and checksums are checked and the
    hash (the second value; complete once the block is left) covers the whole file.
    """
    name = name or path
    try:
        raw = open(path, "rb")
    except OSError as exc:
        raise LegatoError(f"archive {name}: {exc.strerror}") from None
    with raw:
        magic = raw.read(4)
        raw.seek(0)
        hashed = _Hashing(raw)
        if magic.startswith(_GZIP_MAGIC):
            unpacked: IO[bytes] = gzip.GzipFile(fileobj=hashed, mode="rb")  # type: ignore[call-overload]
        elif magic == _ZSTD_MAGIC:
            unpacked = _ZstdReader(hashed)  # type: ignore[assignment]
        else:
            raise LegatoError(f"archive {name}: not a tar.gz or tar.zst file")
        try:
            with tarfile.open(fileobj=unpacked, mode="r|") as tar:
                yield tar, hashed
                _drain(unpacked)
                _drain(hashed)
        except _DAMAGE as exc:
            raise LegatoError(f"archive {name}: damaged or truncated ({exc or type(exc).__name__})") from None


def _drain(stream: IO[bytes] | _Hashing | _ZstdReader) -> None:
    while stream.read(_CHUNK):
        pass


class _Hashing:
    """A reader that hashes what passes through it."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self._hash = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        self._hash.update(data)
        return data

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


class _ZstdReader:
    """A zstd frame reader that raises EOFError on a truncated frame.

    zstandard's own ``stream_reader`` and ``read_to_iter`` end silently when the input stops
    mid-frame; the decompression object knows whether the frame ended (``eof``).
    """

    def __init__(self, raw: _Hashing) -> None:
        self._raw = raw
        self._frame = zstandard.ZstdDecompressor().decompressobj()
        self._buffer = b""
        self._offset = 0

    def read(self, size: int) -> bytes:
        while self._offset == len(self._buffer) and not self._frame.eof:
            compressed = self._raw.read(_ZSTD_IN)
            if not compressed:
                raise EOFError("the zstd frame ends early")
            self._buffer, self._offset = self._frame.decompress(compressed), 0
        data = self._buffer[self._offset:self._offset + size]
        self._offset += len(data)
        return data


def _write_error(exc: OSError, dest: str, partial: str) -> LegatoError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return LegatoError(f"no space left to write archive {dest}: {exc.strerror}")
    culprit = f" ({exc.filename})" if exc.filename and exc.filename != partial else ""
    return LegatoError(f"cannot write archive {dest}: {exc.strerror or exc}{culprit}")


def _remove(path: str) -> None:
    with suppress(FileNotFoundError):
        os.remove(path)


def _fsync_dir(folder: str) -> None:
    """Make the rename durable: a crash right after must not bring back the partial name."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
