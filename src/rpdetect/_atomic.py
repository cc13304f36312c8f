"""Atomic file writes and output-path checks for every file rpdetect writes.

A file is written to a temporary file in the same folder, flushed to disk, then moved over the
target with ``os.replace`` (atomic on POSIX and Windows). On any failure (a full disk, Ctrl-C,
a bug) the temporary file is removed and the previous file, if any, is left as it was: a reader
sees the old file or the complete new one, never a part.

``check_output`` is what commands call on their output paths before any long work, so a path
that cannot be written fails in a second, not after every image was scored.
"""

from __future__ import annotations

import errno
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

from .errors import OutputError

__all__ = ["atomic_path", "atomic_paths", "atomic_write_bytes", "atomic_write_text",
           "check_distinct", "check_output", "check_output_dir"]

_TMP_PREFIX = ".rpdetect-"  # short: the temporary name must fit where the target's name fits


def _new_file_mode(target: Path) -> int:
    """The mode the target gets: the old file's, or what ``open`` would give (0o666 & ~umask)."""
    try:
        return target.stat().st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_temp(target: Path) -> Path:
    try:
        fd, name = tempfile.mkstemp(prefix=_TMP_PREFIX, suffix=".tmp" + target.suffix,
                                    dir=target.parent)
    except OSError as exc:
        raise OutputError(exc.errno, f"{target}: cannot create a file in {target.parent} "
                                     f"({exc.strerror}); choose a writable folder") from exc
    os.close(fd)
    return Path(name)


def _write_error(target: Path, exc: OSError) -> OutputError:
    hint = "; free some disk space or write elsewhere" if exc.errno == errno.ENOSPC else ""
    return OutputError(exc.errno or errno.EIO,
                       f"{target}: could not write it ({exc.strerror or exc}); nothing was "
                       f"changed: the previous file, if any, is intact{hint}")


@contextmanager
def atomic_paths(*paths: str | Path) -> Iterator[list[Path]]:
    """Yield one temporary path beside each of ``paths`` (same suffix, so writers that pick the
    format from the suffix still do); write the files there. On a normal exit every file is
    synced, then all are moved onto their targets one after the other (so a set of files, e.g. a
    model and its report, is replaced together); on any exception, KeyboardInterrupt included,
    the temporary files are removed and the targets are left untouched. An ``OSError`` while
    writing becomes ``OutputError`` naming the target."""
    targets = [Path(p) for p in paths]
    temps: list[Path] = []
    current = targets[0] if targets else Path()
    try:
        for target in targets:
            temps.append(_make_temp(target))
        yield list(temps)
        for target, tmp in zip(targets, temps):
            current = target
            os.chmod(tmp, _new_file_mode(target))
            _fsync(tmp)
        for target, tmp in zip(targets, temps):
            current = target
            os.replace(tmp, target)
    except BaseException as exc:
        for tmp in temps:
            try:
                tmp.unlink()
            except FileNotFoundError:
                pass
        if isinstance(exc, OSError) and not isinstance(exc, OutputError):
            raise _write_error(current, exc) from exc
        raise


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """``atomic_paths`` for one file: yields its temporary path."""
    with atomic_paths(path) as (tmp,):
        yield tmp


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see ``atomic_path``)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str, *, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (see ``atomic_path``)."""
    return atomic_write_bytes(path, text.encode(encoding))


def _name_max(folder: Path) -> int:
    try:
        return int(os.pathconf(folder, "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):  # no pathconf (Windows) or no answer
        return 255


def _probe_writable(folder: Path, what: str) -> None:
    try:
        fd, name = tempfile.mkstemp(prefix=_TMP_PREFIX, suffix=".probe", dir=folder)
    except OSError as exc:
        raise OutputError(exc.errno, f"{what}: cannot write in {folder} ({exc.strerror}); "
                                     f"choose a writable folder") from exc
    os.close(fd)
    os.unlink(name)


def check_output(path: str | Path, *, what: str = "output",
                 inputs: Sequence[str | Path] = ()) -> Path:
    """``path`` as a Path if a file can be written there, else ``OutputError`` saying why and
    what to do: its folder must exist (it is not created) and be writable, the name must fit the
    file system (``PC_NAME_MAX``), an existing ``path`` must be a regular file, and it must not
    be one of ``inputs`` (the files the command reads)."""
    target = Path(path)
    if str(path).endswith(os.sep) or target.name in ("", ".", ".."):
        raise OutputError(errno.EISDIR, f"{what} {path}: expected a file name, got a folder")
    folder = target.parent
    if not folder.exists():
        raise OutputError(errno.ENOENT, f"{what} {target}: folder {folder} does not exist; "
                                        f"create it first (mkdir -p {folder})")
    if not folder.is_dir():
        raise OutputError(errno.ENOTDIR, f"{what} {target}: {folder} is not a folder")
    limit = _name_max(folder)
    if len(os.fsencode(target.name)) > limit:
        raise OutputError(errno.ENAMETOOLONG,
                          f"{what} {target.name[:40]}...: the name is "
                          f"{len(os.fsencode(target.name))} bytes, the file system of {folder} "
                          f"allows {limit}; choose a shorter name")
    if target.is_dir():
        raise OutputError(errno.EISDIR, f"{what} {target}: is a folder; give a file name, e.g. "
                                        f"{target / 'out'}{target.suffix or ''}")
    if target.exists() and not target.is_file():
        raise OutputError(errno.EEXIST, f"{what} {target}: exists and is not a regular file; "
                                        f"choose another name")
    for src in inputs:
        if _same_file(target, Path(src)):
            raise OutputError(errno.EEXIST, f"{what} {target}: is the input file {src}; writing "
                                            f"it would destroy the input, choose another name")
    _probe_writable(folder, f"{what} {target}")
    return target


def check_output_dir(path: str | Path, *, what: str = "output folder") -> Path:
    """An output folder: created if missing (its parent must exist), must be a writable folder."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise OutputError(errno.ENOTDIR, f"{what} {folder}: exists and is not a folder")
    if not folder.exists():
        if not folder.parent.is_dir():
            raise OutputError(errno.ENOENT, f"{what} {folder}: its parent {folder.parent} does "
                                            f"not exist; create it first")
        try:
            folder.mkdir()
        except OSError as exc:
            raise OutputError(exc.errno, f"{what} {folder}: cannot create it "
                                         f"({exc.strerror})") from exc
    _probe_writable(folder, f"{what} {folder}")
    return folder


def check_distinct(paths: Sequence[tuple[str, str | Path]]) -> None:
    """``OutputError`` if two of the (what, path) outputs are the same file."""
    seen: dict[str, str] = {}
    for what, path in paths:
        key = os.path.abspath(path)
        if key in seen:
            raise OutputError(errno.EEXIST, f"{what} {path}: is also the {seen[key]}; give each "
                                            f"output its own name")
        seen[key] = what


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)
