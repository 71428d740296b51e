"""A batch workspace archived in one of three modes (or copied without tar), verified, and read back per instance.

The campaign deletes a batch's workspace right after archiving it, so nothing counts as
archived before it has been read back in full. A file is ``<dest>.partial`` and a folder
``<batch>.partial/`` until then; the rename (after a sync) is what a resumed campaign looks
for, and the recorded SHA-256 (of the file, or of a folder's manifest, which lists every file's)
lets it re-check a finished archive cheaply.

- ``batch``: GNU tar writes one stream of the whole workspace into a pipe; this process
  compresses it (zstandard with a frame checksum, or gzip with its CRC) while hashing what it
  writes. Verification streams the file back through the decompressor into ``tar --list``:
  same bytes, an intact compressed stream whose checksum covers every byte tar wrote, and a
  tar that reads it to its end.
- ``step``: the same, one file per step folder; the study's own files are copied.
- ``instance``: each instance folder becomes one file (built in memory: two tar processes per
  instance would cost more than the archiving), the rest of the workspace stays as it was: a
  light workspace with one inode per instance, left in the archive folder.
- format ``none``: every file copied and read back against its SHA-256.

Every archive lists with plain ``tar -tf``. Symlinks are stored as links, never followed; hard
links as separate copies; sockets are skipped.
"""
from __future__ import annotations

import ctypes
import errno
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import threading
import zlib
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable, Iterator, NoReturn

import zstandard

from legato.errors import LegatoError

FORMATS = ("tar.gz", "tar.zst")
"""Compressed tar formats; ``none`` (copy without tar) is an archive format too, for ``archive_batch``."""
MODES = ("batch", "step", "instance")
"""What becomes one file: the whole batch workspace, each step's folder, or each instance's folder."""
MANIFEST = "legato-archive.json"
"""In a step, instance or copy archive folder: every file written with its SHA-256; written last."""
_GZIP_MAGIC, _ZSTD_MAGIC = b"\x1f\x8b", b"\x28\xb5\x2f\xfd"
_CHUNK = 1 << 20
_SMALL = 64 << 20
"""Instance folders up to this many bytes are archived in memory."""
_LOCAL = threading.local()
"""Each thread's zstd compressor for instance archives: one is reused for speed, and they are not thread-safe."""
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


def pack_folder(source_dir: str, dest: str, fmt: str) -> ArchiveInfo:
    """GNU tar packs ``source_dir``'s contents; the stream is compressed and hashed here.

    tar does the walking and the header writing (C speed, no per-member Python); this process
    compresses the stream while hashing what it writes, so the file is read back only once, by
    ``_verify``. The file is synced before its rename to ``dest``.
    """
    if not os.path.isdir(source_dir):
        raise LegatoError(f"cannot archive {source_dir}: not a folder")
    partial = f"{dest}.partial"
    try:
        os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
        digest = _pack(source_dir, partial, dest, fmt, sorted(os.listdir(source_dir)))
        members = _verify(partial, dest, digest)
        os.replace(partial, dest)
    except BaseException as exc:
        _remove(partial)
        if isinstance(exc, OSError):
            raise _write_error(exc, dest, partial) from None
        raise
    return ArchiveInfo(dest, digest, members, os.path.getsize(dest))


@dataclass(frozen=True)
class BatchArchive:
    """A batch's archive: one file (batch mode) or a folder holding ``files``; its SHA-256 is the file's or the manifest's."""

    path: str
    mode: str
    format: str
    sha256: str
    bytes: int
    members: int
    files: tuple[ArchiveInfo, ...]


def check_archive_options(mode: str, fmt: str) -> None:
    """Checked before a campaign makes any folder."""
    if mode not in MODES:
        raise LegatoError(f"archive mode {mode!r}: expected one of {', '.join(MODES)}")
    if fmt != "none":
        _check_format(fmt)
    elif mode != "batch":
        raise LegatoError(f"--archive-format none copies the workspace file by file; it has no --archive-mode {mode}")


def archive_batch(workspace: Path, target: Path, mode: str, fmt: str) -> BatchArchive:
    """Archive a batch workspace into ``target`` in ``mode``, verified; run again after a crash, it finishes the job.

    Batch mode writes ``<target>/<batch>.<fmt>``. The other modes (and ``fmt`` none) build
    ``<target>/<batch>.partial/``: the workspace with each step's or instance's folder replaced by
    one archive file (or, with none, every file copied and checked), and other files copied and
    checked. Its manifest is written last, everything is synced, and only then does the folder
    get its final name, so a partial never looks complete; a resumed copy skips the files it
    already copied (they are checked again). The pipeline removes the workspace afterwards: a
    light workspace (instance mode) lives on in the target folder.
    """
    check_archive_options(mode, fmt)
    if mode == "batch" and fmt != "none":
        info = write_archive(str(workspace), str(target / f"{workspace.name}.{fmt}"), fmt)
        return BatchArchive(info.path, mode, fmt, info.sha256, info.bytes, info.members, (info,))
    final, partial = target / workspace.name, target / f"{workspace.name}.partial"
    if (final / MANIFEST).is_file():
        return _read_manifest(final)
    if not workspace.is_dir():
        raise LegatoError(f"cannot archive {workspace}: not a folder")
    try:
        packer = _pack_small if mode == "instance" else pack_folder
        files = tuple(_lighten(workspace, partial, _packed_folders(workspace, mode), fmt, packer))
        manifest = {"mode": mode, "format": fmt, "files": [info.__dict__ for info in files]}
        (partial / MANIFEST).write_text(json.dumps(manifest, indent=1))
        _sync_filesystem(str(partial))  # every file durable before the name that says the archive is complete
        os.replace(partial, final)
        _fsync_dir(str(target))
    except OSError as exc:
        raise _write_error(exc, str(final), str(partial)) from None
    return _read_manifest(final)


def _packed_folders(workspace: Path, mode: str) -> set[str]:
    """The folders that become one archive file each, relative to the workspace (from the study's store)."""
    if mode == "batch":
        return set()
    from legato.store import Store

    with Store.of_study(workspace) as store:
        if mode == "step":
            return {step["folder"] for step in store.steps()}
        return {workspace_ for (workspace_,) in store.db.execute("SELECT workspace FROM instances")}


def _lighten(root: Path, out: Path, packed: set[str], fmt: str, packer: Callable[[str, str, str], ArchiveInfo]
             ) -> Iterator[ArchiveInfo]:
    """Rebuild ``root`` under ``out``: folders in ``packed`` become ``<folder>.<fmt>``, files are copied; symlinks kept."""
    pending = [""]
    while pending:
        relative = pending.pop()
        (out / relative).mkdir(parents=True, exist_ok=True)
        with os.scandir(root / relative) as entries:
            children = sorted(entries, key=lambda entry: entry.name)
        for entry in children:
            name = f"{relative}/{entry.name}" if relative else entry.name
            if entry.is_symlink():
                _remove(str(out / name))
                os.symlink(os.readlink(entry.path), out / name)
            elif entry.is_dir() and name in packed:
                info = packer(entry.path, str(out / f"{name}.{fmt}"), fmt)
                yield ArchiveInfo(f"{name}.{fmt}", info.sha256, info.members, info.bytes)
            elif entry.is_dir():
                pending.append(name)
            elif entry.is_file():
                yield _copy(entry.path, out / name, name)


def _pack_small(folder: str, dest: str, fmt: str) -> ArchiveInfo:
    """An instance's folder as one archive, made in memory: two tar processes per instance would dominate.

    The tar (GNU format, as GNU tar writes) is built with tarfile, compressed, and verified
    before it is written: it decompresses to exactly the tar that was built, which lists exactly
    the members walked; the written file is read back and compared. Folders over ``_SMALL``
    bytes go through GNU tar instead, so memory stays bounded.
    """
    members = list(_walk(folder))
    if sum(os.lstat(path).st_size for path, _ in members) > _SMALL:
        return pack_folder(folder, dest, fmt)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        names = [name for path, name in members if _add(tar, path, name)]
    plain = buffer.getvalue()
    packed = gzip.compress(plain, 6, mtime=0) if fmt == "tar.gz" else _small_compressor().compress(plain)
    unpacked = gzip.decompress(packed) if fmt == "tar.gz" else zstandard.ZstdDecompressor().decompress(packed)
    with tarfile.open(fileobj=io.BytesIO(unpacked), mode="r") as tar:
        if unpacked != plain or tar.getnames() != names:
            _mismatch(dest, "(the whole file)", "it does not read back as it was built")
    partial = f"{dest}.partial"
    with open(partial, "wb") as stream:
        stream.write(packed)
    with open(partial, "rb") as stream:
        if stream.read() != packed:
            _mismatch(dest, "(the whole file)", "what was read back is not what was written")
    os.replace(partial, dest)
    return ArchiveInfo(dest, hashlib.sha256(packed).hexdigest(), len(names), len(packed))


def _small_compressor() -> zstandard.ZstdCompressor:
    if not hasattr(_LOCAL, "zstd"):
        _LOCAL.zstd = zstandard.ZstdCompressor(level=3, write_checksum=True)
    return _LOCAL.zstd


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


def _add(tar: tarfile.TarFile, path: str, name: str) -> bool:
    """Folders, symlinks (as links) and files (hard links as copies); sockets, FIFOs and devices are skipped, as GNU tar does sockets."""
    info = tar.gettarinfo(path, arcname=name)
    if info is None or not (info.isreg() or info.islnk() or info.isdir() or info.issym()):
        return False
    if info.isreg() or info.islnk():
        info.type, info.linkname, info.size = tarfile.REGTYPE, "", os.lstat(path).st_size
        with open(path, "rb") as stream:
            tar.addfile(info, stream)
    else:
        tar.addfile(info)
    return True


def _copy(source: str, dest: Path, name: str) -> ArchiveInfo:
    """Copy one file hashing it, then read the copy back: it must hash the same. A copy left by a crash is only re-checked."""
    stat = os.stat(source)
    done = dest.is_file() and (dest.stat().st_size, dest.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)
    if done:
        digest = _file_sha256(source)
    else:
        hasher = hashlib.sha256()
        with open(source, "rb") as reading, open(dest, "wb") as writing:
            while chunk := reading.read(_CHUNK):
                _write_hashed(writing, hasher, chunk)
        os.utime(dest, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        digest = hasher.hexdigest()
    if _file_sha256(str(dest)) != digest:
        raise LegatoError(f"copy {dest} failed verification: its content differs from {source}")
    return ArchiveInfo(name, digest, 1, stat.st_size)


def _file_sha256(path: str) -> str:
    hasher = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(_CHUNK):
            hasher.update(chunk)
    return hasher.hexdigest()


def _read_manifest(folder: Path) -> BatchArchive:
    path = folder / MANIFEST
    try:
        data = path.read_bytes()
        manifest = json.loads(data)
        files = tuple(ArchiveInfo(**entry) for entry in manifest["files"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise LegatoError(f"archive {folder}: unreadable manifest {MANIFEST}: {exc}") from None
    return BatchArchive(str(folder), manifest["mode"], manifest["format"], hashlib.sha256(data).hexdigest(),
                        sum(info.bytes for info in files), sum(info.members for info in files), files)


def instance_members(archive: str, workspace: str) -> list[tuple[str, int]]:
    """(name, size) of one instance's files, names relative to the batch workspace, whatever the archive's mode."""
    if os.path.isfile(archive):
        return list_members(archive, workspace + "/")
    packed, inside = _holder(archive, workspace)
    if packed is None:
        root = os.path.join(archive, workspace)
        return [(os.path.relpath(path, archive), os.lstat(path).st_size) for path in _files_under(root)]
    folder = packed.path[: -len(_suffix(packed.path))]
    return [(f"{folder}/{name}", size) for name, size in list_members(os.path.join(archive, packed.path), inside)]


def extract_instance(archive: str, workspace: str, file: str | None, dest_dir: str) -> list[str]:
    """Bring back one instance's folder (or one file of it) into ``dest_dir/<workspace>``, whatever the archive's mode."""
    wanted = f"{workspace}/{file}" if file else f"{workspace}/"
    if os.path.isfile(archive):
        return extract(archive, wanted, dest_dir)
    packed, inside = _holder(archive, workspace)
    if packed is not None:
        folder = packed.path[: -len(_suffix(packed.path))]
        prefix = inside + file if file else inside
        return extract(os.path.join(archive, packed.path), prefix, os.path.join(dest_dir, folder))
    return _copy_out(archive, wanted.rstrip("/"), dest_dir)


def _holder(archive: str, workspace: str) -> tuple[ArchiveInfo | None, str]:
    """The archive file holding ``workspace`` (its own, or its step's) and the instance's prefix inside it."""
    for info in _read_manifest(Path(archive)).files:
        folder = info.path[: -len(_suffix(info.path))] if _suffix(info.path) else None
        if folder and (workspace == folder or workspace.startswith(folder + "/")):
            return info, workspace[len(folder) + 1:] + "/" if workspace != folder else ""
    return None, ""


def _suffix(path: str) -> str:
    return next((f".{fmt}" for fmt in FORMATS if path.endswith(f".{fmt}")), "")


def _files_under(root: str) -> list[str]:
    if os.path.isfile(root) or os.path.islink(root):
        return [root]
    return sorted(os.path.join(folder, name) for folder, _, names in os.walk(root) for name in names)


def _copy_out(archive: str, wanted: str, dest_dir: str) -> list[str]:
    """Copied (format none) files of one instance, copied back out with their folders."""
    written = []
    for path in _files_under(os.path.join(archive, wanted)):
        target = os.path.join(dest_dir, os.path.relpath(path, archive))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copy2(path, target, follow_symlinks=False)
        written.append(target)
    if not written:
        raise LegatoError(f"archive {archive}: nothing under {wanted!r}")
    return written


def verify_archive(path: str, sha256: str) -> None:
    """Re-check a finished archive against the SHA-256 recorded when it was verified in full.

    An archive folder is checked through its manifest: the manifest's own SHA-256, then every file's.
    """
    if os.path.isdir(path):
        verify_archive(os.path.join(path, MANIFEST), sha256)
        for info in _read_manifest(Path(path)).files:
            verify_archive(os.path.join(path, info.path), info.sha256)
        return
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


_TAR_NAMES = ["--quoting-style=escape", "--format=gnu"]


def _pack(source_dir: str, partial: str, dest: str, fmt: str, names: list[str]) -> str:
    """Run ``tar -c`` over ``names`` into a pipe; compress, hash and write its stream to ``partial``, then fsync.

    Returns the SHA-256 of what was written. The compressed stream carries a checksum of what
    tar produced (zstd's frame checksum, gzip's CRC), which reading it back checks.
    """
    with tempfile.NamedTemporaryFile(prefix="legato-tar-") as listing:
        listing.write(b"".join(os.fsencode(name) + b"\0" for name in names))
        listing.flush()
        command = ["tar", "-C", source_dir, "--create", "--file=-", "--sort=name", "--hard-dereference", *_TAR_NAMES,
                   "--null", "--verbatim-files-from", f"--files-from={listing.name}"]
        hasher = hashlib.sha256()
        with open(partial, "wb") as raw, _tar(command, subprocess.DEVNULL, subprocess.PIPE, dest, "packing") as tar:
            compressor = _compressor(fmt)
            while chunk := tar.stdout.read(_CHUNK):
                _write_hashed(raw, hasher, compressor.compress(chunk))
            _write_hashed(raw, hasher, compressor.flush())
            raw.flush()
            os.fsync(raw.fileno())
        return hasher.hexdigest()


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
    """zstd with a frame checksum, or gzip (whose trailer holds a CRC-32): both checked on reading.

    One thread: a campaign archives while its instances keep the cores busy, and zstd's worker
    threads cost a third more CPU for the same bytes.
    """
    if fmt == "tar.gz":
        return zlib.compressobj(6, zlib.DEFLATED, 31)
    return zstandard.ZstdCompressor(level=3, write_checksum=True).compressobj()


def _write_hashed(raw: IO[bytes], hasher: Any, data: bytes) -> None:
    if data:
        raw.write(data)
        hasher.update(data)


def _verify(partial: str, dest: str, sha256: str) -> int:
    """Stream ``partial`` back through its decompressor (checksum/CRC checked) into ``tar -t``; how many members.

    The file must hash as it did when written and decompress to the end of its frame, with
    the checksum of what tar produced intact, and tar must read it to its end.
    """
    hasher = hashlib.sha256()
    with tempfile.TemporaryFile() as listing:
        with _tar(["tar", "--list", "--file=-", *_TAR_NAMES], subprocess.PIPE, listing, dest, "verifying") as tar:
            _feed(partial, dest, hasher, tar.stdin)
        listing.seek(0)
        members = listing.read().count(b"\n")
    if hasher.hexdigest() != sha256:
        _mismatch(dest, "(the whole file)", "what was read back is not what was written")
    return members


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


def _sync_filesystem(folder: str) -> None:
    """syncfs(2) of the file system holding ``folder``: one call instead of an fsync per file, and not every disk.

    Where the C library has no syncfs (not Linux), sync(2) does it for every disk.
    """
    syncfs = getattr(ctypes.CDLL(None, use_errno=True), "syncfs", None)
    if syncfs is None:
        os.sync()
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        if syncfs(fd) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code), folder)
    finally:
        os.close(fd)


def _fsync_dir(folder: str) -> None:
    """Make the rename durable: a crash right after must not bring back the partial name."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
