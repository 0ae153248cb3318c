"""The state folder: JSON files written atomically, corrupt files set aside, run locks.

Everything that must survive between cron runs (CPU and network counters, alert
state, outbox) lives here. A write is temp file in the same folder, fsync, rename,
so a crash leaves either the old or the new file, never half of one.
"""

import errno
import json
import logging
import os
import time
from datetime import datetime

log = logging.getLogger("monitor")

FILE_MODE = 0o600


class StateError(Exception):
    """The state folder cannot be used (missing and not creatable, read-only, full)."""


def atomic_write(path: str, data: bytes, mode: int = FILE_MODE) -> None:
    """Write `data` to `path` so that readers see the old or the new content, never a mix."""
    folder = os.path.dirname(path) or "."
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            os.fchmod(fd, mode)  # the umask must not widen or narrow it
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_json(path: str, value) -> None:
    atomic_write(path, json.dumps(value, separators=(",", ":"), sort_keys=True).encode())


def read_json(path: str, default=None, expect=dict):
    """Return the JSON in `path`, or `default` if it is missing.

    A file that is empty, not JSON or not of the expected type is renamed to
    `path.corrupt-<timestamp>` with a WARNING: a duplicate alert beats silence.
    """
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except FileNotFoundError:
        return default
    except IsADirectoryError:
        raise StateError(f"{path}: is a directory") from None
    try:
        value = json.loads(raw)
        if not isinstance(value, expect):
            raise ValueError(f"expected a JSON {expect.__name__}")
        return value
    except ValueError as exc:
        aside = f"{path}.corrupt-{datetime.now().strftime('%Y%m%dT%H%M%S')}"
        try:
            os.replace(path, aside)
        except OSError:
            aside = "(could not rename it)"
        reason = "empty file" if not raw.strip() else f"{type(exc).__name__}: {str(exc)[:120]}"
        log.warning("state file %s was unreadable (%s); moved to %s, starting from empty state",
                    path, reason, aside, extra={"event": "state_corrupt", "file": path})
        return default


class FolderRefused(StateError):
    """A root run must not use the state folder: others could write it (monitor/safety.py)."""


def ensure_folder(path: str) -> None:
    """Create the state folder if missing (owned as safety.owner_for says when root);
    raise FolderRefused for one a root run must not use, StateError if unusable."""
    from monitor import safety

    if os.path.exists(path) and not os.path.isdir(path):
        raise StateError(f"{path}: not a directory")
    try:
        safety.prepare(path, 0o700)
    except safety.Refused as exc:
        raise FolderRefused(str(exc)) from None
    except OSError as exc:
        raise StateError(f"cannot create {path}: {exc.strerror}") from None
    if not os.path.isdir(path):
        raise StateError(f"{path}: not a directory")


class RunLock:
    """An flock on `state/<command>.lock` so runs of one command never overlap."""

    def __init__(self, folder: str, command: str, wait: float = 30.0):
        self.path = os.path.join(folder, f"{command}.lock")
        self.command, self.wait = command, wait
        self.fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, waiting up to `wait` seconds. Raise LockHeld naming the holder."""
        import fcntl

        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, FILE_MODE)
        except OSError as exc:  # read-only or full disk, a folder in the way
            raise StateError(f"cannot open {self.path}: {exc.strerror}") from None
        deadline = time.monotonic() + self.wait
        delay = 0.01
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise StateError(f"cannot lock {self.path}: {exc.strerror}") from None
                if time.monotonic() >= deadline:
                    holder = _read_pid(fd)
                    os.close(fd)
                    raise LockHeld(self.command, holder, self.path, self.wait)
                time.sleep(delay)  # only when another run holds the lock
                delay = min(delay * 2, 0.2)
        self.fd = fd
        try:
            # Write, then cut: a waiter reading meanwhile sees a PID, never an empty file.
            pid = f"{os.getpid()}\n".encode()
            os.pwrite(fd, pid, 0)
            os.ftruncate(fd, len(pid))
        except OSError:
            pass  # the PID only names the holder in the next run's message; the lock holds

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing drops the flock
            self.fd = None


class LockHeld(Exception):
    def __init__(self, command, pid, path, waited):
        holder = f"PID {pid}" if pid else "another process"
        super().__init__(f"another `monitor {command}` run ({holder}) holds {path}; "
                         f"gave up after {waited:g}s")


def _read_pid(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).decode().strip() or 0) or None
    except (OSError, ValueError):
        return None
