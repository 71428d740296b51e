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
import io
import os
import subprocess
import tarfile
import tempfile
import zlib
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import IO, Any, Iterator, NoReturn

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


def write_archive(source_dir: str, dest: str, fmt: str = "tar.gz") -> ArchiveInfo:
    """Pack ``source_dir`` (member names relative to it) into ``dest``, verified before it gets its final name."""
    _check_format(fmt)
    info = pack_folder(source_dir, dest, fmt)
    _fsync_dir(os.path.dirname(os.path.abspath(dest)))
    return info


def pack_folder(source_dir: str, dest: str, fmt: str, names: list[str] | None = None) -> ArchiveInfo:
    """GNU tar packs ``names`` (default: everything) of ``source_dir``; the stream is compressed and hashed here.

    tar does the walking and the header writing (C speed, no per-member Python); this process
    compresses the stream while hashing what it writes, so the file is read back only once, by
    ``_verify``. The file is synced before its rename to ``dest``.
    """
    if not os.path.isdir(source_dir):
        raise LegatoError(f"cannot archive {source_dir}: not a folder")
    partial = f"{dest}.partial"
    try:
        os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
        written = _pack(source_dir, partial, dest, fmt, sorted(os.listdir(source_dir)) if names is None else names)
        digest = _verify(partial, dest, written)
        os.replace(partial, dest)
    except BaseException as exc:
        _remove(partial)
        if isinstance(exc, OSError):
            raise _write_error(exc, dest, partial) from None
        raise
    return ArchiveInfo(dest, digest, len(written.members), os.path.getsize(dest))


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


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise LegatoError(f"archive format {fmt!r}: expected one of {', '.join(FORMATS)}")


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


@dataclass(frozen=True)
class _Written:
    """What packing wrote: tar's own listing of the members (``--quoting-style=escape``) and the file's SHA-256."""

    members: list[str]
    sha256: str


_TAR_NAMES = ["--quoting-style=escape", "--format=gnu"]


def _pack(source_dir: str, partial: str, dest: str, fmt: str, names: list[str]) -> _Written:
    """Run ``tar -c`` over ``names`` into a pipe; compress, hash and write its stream to ``partial``, then fsync."""
    with tempfile.TemporaryDirectory(prefix="legato-tar-") as scratch:
        listing, index = os.path.join(scratch, "names"), os.path.join(scratch, "index")
        with open(listing, "wb") as stream:
            stream.write(b"".join(os.fsencode(name) + b"\0" for name in names))
        command = ["tar", "-C", source_dir, "--create", "--file=-", "--sort=name", "--hard-dereference", "--verbose",
                   f"--index-file={index}", *_TAR_NAMES, "--null", "--verbatim-files-from", f"--files-from={listing}"]
        hasher = hashlib.sha256()
        with open(partial, "wb") as raw, _tar(command, subprocess.DEVNULL, subprocess.PIPE, dest, "packing") as tar:
            compressor = _compressor(fmt)
            while chunk := tar.stdout.read(_CHUNK):
                _write_hashed(raw, hasher, compressor.compress(chunk))
            _write_hashed(raw, hasher, compressor.flush())
            raw.flush()
            os.fsync(raw.fileno())
        with open(index, encoding="utf-8", errors="surrogateescape") as stream:
            return _Written(stream.read().splitlines(), hasher.hexdigest())


@contextmanager
def _tar(command: list[str], stdin: Any, stdout: Any, dest: str, doing: str) -> Iterator[subprocess.Popen]:
    """A ``tar`` child; a non-zero exit becomes a LegatoError naming ``dest`` with tar's last word."""
    with tempfile.TemporaryFile() as errors:
        try:
            tar = subprocess.Popen(command, stdin=stdin, stdout=stdout, stderr=errors)
        except OSError as exc:
            raise LegatoError(f"archive {dest}: cannot run GNU tar: {exc.strerror}") from None
        try:
            yield tar
        finally:
            for pipe in (tar.stdin, tar.stdout):
                if pipe:
                    with suppress(BrokenPipeError):
                        pipe.close()
            code = tar.wait()
        if code:
            errors.seek(0)
            said = errors.read().decode(errors="replace").strip().splitlines()
            raise LegatoError(f"archive {dest}: tar failed while {doing}: {said[-1] if said else f'exit {code}'}")


def _compressor(fmt: str) -> Any:
    """zstd with a frame checksum (all cores), or gzip (whose trailer holds a CRC-32): both checked on reading."""
    if fmt == "tar.gz":
        return zlib.compressobj(6, zlib.DEFLATED, 31)
    return zstandard.ZstdCompressor(level=3, threads=-1, write_checksum=True).compressobj()


def _write_hashed(raw: IO[bytes], hasher: Any, data: bytes) -> None:
    if data:
        raw.write(data)
        hasher.update(data)


def _verify(partial: str, dest: str, written: _Written) -> str:
    """Stream ``partial`` back through its decompressor (checksum/CRC checked) into ``tar -t``; returns its SHA-256.

    The file must hash as it did when written, decompress to the end of its frame, and list
    exactly the members tar reported while packing, in the same order.
    """
    hasher = hashlib.sha256()
    with tempfile.TemporaryFile() as listing:
        with _tar(["tar", "--list", "--file=-", *_TAR_NAMES], subprocess.PIPE, listing, dest, "verifying") as tar:
            _feed(partial, dest, hasher, tar.stdin)
        listing.seek(0)
        found = listing.read().decode("utf-8", "surrogateescape").splitlines()
    if hasher.hexdigest() != written.sha256:
        _mismatch(dest, "(the whole file)", "what was read back is not what was written")
    if found != written.members:
        odd = sorted(set(written.members) ^ set(found)) or ["(member order)"]
        _mismatch(dest, odd[0], f"{len(found)} members listed, {len(written.members)} packed")
    return hasher.hexdigest()


def _feed(partial: str, dest: str, hasher: Any, sink: IO[bytes]) -> None:
    """Hash and decompress all of ``partial`` into ``sink`` (tar may stop reading at its end-of-archive blocks)."""
    inflater = _Inflater(partial, dest)
    with open(partial, "rb") as raw:
        while chunk := raw.read(_CHUNK):
            hasher.update(chunk)
            for data in inflater.feed(chunk):
                try:
                    sink.write(data)
                except BrokenPipeError:
                    sink = io.BytesIO()  # tar has what it needs; the rest is still checked here
        inflater.finish()


class _Inflater:
    """Decompresses a gzip or zstd file a piece at a time, each piece bounded; damage and truncation raise LegatoError."""

    def __init__(self, path: str, name: str) -> None:
        self._name = name
        with open(path, "rb") as raw:
            magic = raw.read(4)
        if magic.startswith(_GZIP_MAGIC):
            self._gzip, self._obj = True, zlib.decompressobj(31)
        elif magic == _ZSTD_MAGIC:
            self._gzip, self._obj = False, zstandard.ZstdDecompressor().decompressobj()
        else:
            raise LegatoError(f"archive {name}: not a tar.gz or tar.zst file")

    def feed(self, chunk: bytes) -> Iterator[bytes]:
        try:
            if self._gzip:
                while chunk:
                    yield self._obj.decompress(chunk, _CHUNK)
                    chunk = self._obj.unconsumed_tail
                    self._no_trailer()
            else:
                view = memoryview(chunk)
                for start in range(0, len(view), _ZSTD_IN):
                    yield self._obj.decompress(view[start:start + _ZSTD_IN])
        except _DAMAGE as exc:
            raise LegatoError(f"archive {self._name}: damaged ({exc or type(exc).__name__})") from None

    def finish(self) -> None:
        if not self._obj.eof:
            raise LegatoError(f"archive {self._name}: damaged or truncated (the compressed stream ends early)")
        self._no_trailer()

    def _no_trailer(self) -> None:
        if self._obj.eof and self._obj.unused_data:
            raise LegatoError(f"archive {self._name}: damaged (data after the end of the compressed stream)")


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
