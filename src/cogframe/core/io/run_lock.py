"""One run per run folder: an advisory lock file that names its holder.

Two runs writing into one folder overwrite each other's checkpoints, weights and metrics, and
each reports results that may be the other's. :func:`run_lock` takes an exclusive, non-blocking
``fcntl.flock`` on ``<folder>/.cogframe.lock`` for the duration of a run; a second run into the
same folder fails at once with a :class:`RunFolderLockedError` that names the first run's PID,
host, start time and command (written into the lock file by the holder).

Why ``flock`` and not a PID file: the kernel releases a ``flock`` when its holder dies, however
it dies (SIGKILL, OOM killer, power loss on a local disk), so a killed run never leaves a lock
that blocks the next one; a PID file alone cannot tell a live holder from a recycled PID. The
holder's details written into the file are only for the message. Why not the ``filelock``
package: it also uses ``flock`` underneath, but records nothing about the holder, and the
message is the point of this module; this is ~100 lines with no new dependency.

The lock file is removed when the run ends (unlinked *while still locked*, so a process that
opened the old file in the meantime notices, by comparing inodes, that it locked a file that is
gone, and retries). A killed run leaves the file behind with its details; the next run takes the
lock over and prints a note that the previous run did not finish.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import socket
import sys
import time
import warnings
from pathlib import Path
from typing import Iterator

from cogframe.errors import ConfigError

__all__ = ["LOCK_FILE", "RunFolderLockedError", "RunLock", "run_lock"]

LOCK_FILE = ".cogframe.lock"

try:  # POSIX; the lock is advisory and degrades to a warning where flock does not exist
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


class RunFolderLockedError(ConfigError):
    """Another live process holds the run folder's lock (the message names it)."""


def _holder_text(info: dict) -> str:
    if not info:
        return "another process (it has not written its details yet)"
    parts = [f"PID {info.get('pid', '?')}"]
    if info.get("host"):
        parts.append(f"on {info['host']}")
    if info.get("started"):
        parts.append(f"started {info['started']}")
    text = " ".join(parts)
    if info.get("command"):
        text += f" (`{info['command']}`)"
    return text


def _read_info(handle) -> dict:
    try:
        handle.seek(0)
        data = handle.read()
        info = json.loads(data) if data.strip() else {}
        return info if isinstance(info, dict) else {}
    except (OSError, ValueError):
        return {}


class RunLock:
    """An exclusive lock on one run folder (use :func:`run_lock`, or ``acquire``/``release``).

    Args:
        folder: The run folder (created if missing).
        name: The lock file's name inside ``folder``.
        what: How to name the folder in messages (e.g. ``"output_dir runs/x"``).
        command: The command recorded for other runs to see (default: this process's argv).
    """

    def __init__(self, folder: str | os.PathLike, *, name: str = LOCK_FILE, what: str | None = None,
                 command: str | None = None) -> None:
        self.folder = Path(folder)
        self.path = self.folder / name
        self.what = what or f"run folder {self.folder}"
        self.command = command if command is not None else " ".join(
            ["cogframe" if Path(sys.argv[0]).name in ("cogframe", "__main__.py") else sys.argv[0],
             *sys.argv[1:]])
        self._handle = None
        self.stale: dict = {}

    @property
    def held(self) -> bool:
        """Whether this object holds the lock now."""
        return self._handle is not None

    def acquire(self) -> "RunLock":
        """Take the lock or raise at once.

        Raises:
            RunFolderLockedError: A live process holds it; the message names its PID, host,
                start time and command, and the fix.
        """
        if self._handle is not None:
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        if fcntl is None:  # pragma: no cover - Windows
            warnings.warn(f"cannot lock {self.what} on this platform (no fcntl); make sure no other "
                          "run writes into it.", stacklevel=2)
            return self
        for _ in range(50):
            handle = open(self.path, "a+", encoding="utf-8")
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                info = {}
                # The holder writes its details right after locking; give it a moment.
                for _ in range(20):
                    info = _read_info(handle)
                    if info:
                        break
                    time.sleep(0.05)
                handle.close()
                raise RunFolderLockedError(
                    f"{self.what} is in use by another cogframe run: {_holder_text(info)}. Two runs "
                    "in one folder would overwrite each other's outputs. Wait for that run to "
                    f"finish (or stop it: kill {info.get('pid', '<pid>')}), or choose another "
                    "folder for this one.") from None
            except OSError as exc:  # e.g. a file system without locks
                handle.close()
                warnings.warn(f"cannot lock {self.what} ({exc}); make sure no other run writes into "
                              "it.", stacklevel=2)
                return self
            try:
                same = os.stat(self.path).st_ino == os.fstat(handle.fileno()).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                # The previous holder removed the file between our open and our lock: we hold a
                # lock on a file nobody else will ever open. Start again on the new one.
                handle.close()
                continue
            self.stale = _read_info(handle)
            handle.seek(0)
            handle.truncate()
            handle.write(json.dumps({
                "pid": os.getpid(), "host": socket.gethostname(),
                "started": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
                "command": self.command, "folder": str(self.folder.resolve()),
            }) + "\n")
            handle.flush()
            self._handle = handle
            if self.stale:
                print(f"note: {self.what} was left locked by a run that did not finish "
                      f"({_holder_text(self.stale)}); its outputs may be incomplete. Taking it over.",
                      file=sys.stderr)
            return self
        raise RunFolderLockedError(f"could not lock {self.what}: its lock file {self.path} keeps being "
                                   "replaced by other processes. Stop them, or choose another folder.")

    def release(self) -> None:
        """Remove the lock file and release the lock (safe to call twice)."""
        handle, self._handle = self._handle, None
        if handle is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.path)  # while still locked: see the module docstring
        handle.close()  # closing the last descriptor releases the flock

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


@contextlib.contextmanager
def run_lock(folder: str | os.PathLike, *, name: str = LOCK_FILE, what: str | None = None,
             command: str | None = None, enabled: bool = True) -> Iterator[RunLock | None]:
    """Hold the lock of ``folder`` for the ``with`` block (see :class:`RunLock`).

    Args:
        folder: The run folder (created if missing).
        name: The lock file's name inside ``folder``.
        what: How to name the folder in messages.
        command: The command recorded for other runs (default: this process's argv).
        enabled: False yields None and locks nothing (e.g. ranks other than 0 of a torchrun job,
            whose rank 0 holds the lock for all of them).

    Raises:
        RunFolderLockedError: Another live run holds the folder.
    """
    if not enabled:
        yield None
        return
    lock = RunLock(folder, name=name, what=what, command=command)
    with lock:
        yield lock
