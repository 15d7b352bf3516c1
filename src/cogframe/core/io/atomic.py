"""Atomic file writes: a reader never sees a half-written file under its final name.

Every writer here writes to a temporary file in the destination folder, flushes and ``fsync``s it,
then ``os.replace``s it onto the final name (atomic on POSIX and Windows when both are on the same
file system, which a sibling temp file guarantees) and finally ``fsync``s the folder so the rename
itself survives a power cut. On any exception the temporary file is removed and the destination
is left untouched.

Temporary files are named ``.<name>.<random>.tmp<ext>``: hidden, marked ``.tmp``, and still ending
in the real extension because writers such as ffmpeg choose the container from it. A crash
leftover is therefore recognisable and never mistaken for a finished file by code that looks for
``<name>``.

``tempfile.mkstemp`` creates files readable by their owner only (0600); before the rename every
finished file gets the mode a plain ``open(path, "w")`` would give it (0666 minus the umask,
0644 with the usual umask 022), so weights and shards can be shared like any other output.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

__all__ = [
    "TMP_SUFFIX",
    "default_file_mode",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "fsync_dir",
    "is_temp_file",
]

TMP_SUFFIX = ".tmp"


def is_temp_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` looks like a (possibly leftover) temporary file of this module."""
    name = Path(path).name
    return name.startswith(".") and TMP_SUFFIX in Path(name).suffixes


def fsync_dir(directory: str | os.PathLike) -> None:
    """Flushes a folder's entry table so a rename inside it is durable (no-op where unsupported)."""
    try:
        fd = os.open(os.fspath(directory), os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open folders; the rename is still atomic there
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _current_umask() -> int:
    # Linux reports the umask in /proc without changing it; elsewhere os.umask must be set to
    # read it, which is a brief process-wide change (harmless here: it is put back at once).
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def default_file_mode() -> int:
    """The permission bits of a newly created plain file: ``0o666`` minus the process umask."""
    return 0o666 & ~_current_umask()


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as handle:
        handle.flush()
        os.fsync(handle.fileno())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yields a temporary path to write to; on success it is moved onto ``path`` atomically.

    Use this for writers that insist on opening the file themselves (ffmpeg, safetensors, Pillow).
    The temporary name keeps ``path``'s extension (or ``suffix``) because such writers pick the
    container format from it.

    Args:
        path: Final destination; its folder is created if missing.
        suffix: Extension for the temporary file; defaults to ``path``'s own extension.

    Yields:
        The temporary path. The caller must have closed the file before the ``with`` block ends.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    ext = suffix if suffix is not None else final.suffix
    fd, tmp_name = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=f"{TMP_SUFFIX}{ext}")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        _fsync_file(tmp)
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, final)
        fsync_dir(final.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Writes ``data`` to ``path`` atomically (temp file + fsync + rename)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Writes UTF-8 ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Writes ``obj`` as indented, key-sorted JSON to ``path`` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")
