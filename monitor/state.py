"""The state folder: JSON files written atomically, corrupt files set aside, run locks.

Everything that must survive between cron runs (CPU and network counters, alert
state, outbox) lives here. A write is temp file in the same folder, fsync, rename,
so a crash leaves either the old or the new file, never half of one.
"""

import errno
import fcntl
import json
import logging
import os
import stat
import struct
import threading
import time
import zlib
from datetime import datetime

from monitor import safety
from monitor.results import is_number

log = logging.getLogger("monitor")

FILE_MODE = 0o600


class StateError(Exception):
    """The state folder cannot be used (missing and not creatable, read-only, full)."""


class UnsafeFile(OSError):
    """A state, log, lock, archive or textfile path that is not a plain regular file.

    Whoever can write the folder can plant a symlink (to /root/...), a FIFO (a read
    that never ends) or a hard link there: a root run refuses it rather than read or
    write through it. An OSError, so every "cannot write X: <strerror>" path reports it.
    """

    def __init__(self, path: str, what: str):
        self.what = what
        code = errno.ELOOP if what == "a symbolic link" else errno.EINVAL
        kind = what if what.startswith("a hard link") else f"{what}, not a regular file"
        super().__init__(code, f"is {kind}; refused, nothing read or written through it", path)

    def __str__(self):
        return self.strerror


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def open_regular(path: str, flags: int = os.O_RDONLY, mode: int = FILE_MODE, dir_fd: int | None = None) -> int:
    """Open `path` (relative to `dir_fd` if given) without following a symlink or blocking
    on a FIFO; return the descriptor. Raise UnsafeFile if it is not a regular file with one link.

    The one door for every state, log, lock and archive file. Never pass O_TRUNC: a hard
    link would be cut before it is seen; truncate the descriptor once it is checked.
    """
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafeFile(path, "a symbolic link") from None
        if exc.errno == errno.ENXIO:  # a FIFO nobody reads, opened for writing; a socket
            raise UnsafeFile(path, "a FIFO or socket") from None
        if exc.errno == errno.EISDIR:  # opened for writing
            raise UnsafeFile(path, "a directory") from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnsafeFile(path, _kind(info.st_mode))
        if info.st_nlink != 1:  # a hard link to a file elsewhere (or one already unlinked)
            raise UnsafeFile(path, f"a hard link ({info.st_nlink} links to one file)")
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_file(path: str, limit: int = -1, dir_fd: int | None = None) -> bytes:
    """The bytes of the regular file `path` (at most `limit`). Raise OSError (UnsafeFile)."""
    with open(open_regular(path, dir_fd=dir_fd), "rb") as handle:
        return handle.read(limit)


def create_temp(folder: str, name: str, mode: int = FILE_MODE, dir_fd: int | None = None) -> tuple[int, str]:
    """Create a new, unguessable temp file `.NAME.RANDOM.tmp` beside `name`; return (fd, path).

    O_CREAT|O_EXCL|O_NOFOLLOW: never an existing file, never through a planted link.
    With `dir_fd` the returned path is relative to it.
    """
    while True:  # os.urandom, as secrets.token_hex does, without importing OpenSSL's hashlib
        tmp = f".{name}.{os.urandom(8).hex()}.tmp"
        path = tmp if dir_fd is not None else os.path.join(folder, tmp)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode,
                         dir_fd=dir_fd)
        except FileExistsError:
            continue
        return fd, path


def atomic_write(path: str, data: bytes, mode: int = FILE_MODE) -> None:
    """Write `data` to `path` so that readers see the old or the new content, never a mix.

    The rename replaces whatever entry is at `path` (a planted symlink included) and
    writes nothing through it.
    """
    folder = os.path.dirname(path) or "."
    fd, tmp = create_temp(folder, os.path.basename(path), mode)
    try:
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


def parse_json(raw):
    """JSON text as a state file holds it. NaN and Infinity are not JSON (a hand edit, another
    tool): they read as null, no number, so the file is written back as plain JSON."""
    return json.loads(raw, parse_constant=lambda name: None)


def read_json(path: str, default=None, expect=dict):
    """Return the JSON in `path`, or `default` if it is missing.

    A file that is empty, not JSON or not of the expected type is renamed to
    `path.corrupt-<timestamp>` with a WARNING: a duplicate alert beats silence.
    A symlink, FIFO or other non-regular file raises UnsafeFile (never followed).
    """
    try:
        raw = read_file(path)
    except FileNotFoundError:
        return default
    except UnsafeFile as exc:
        if exc.strerror.startswith("is a directory"):
            raise StateError(f"{path}: is a directory") from None
        raise
    try:
        value = parse_json(raw)
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


class Carried:
    """What one run of a job leaves the next (`Job.carried_file` in the state folder).

    `previous` is what the last run saved, `updates` what this one saves: kernel counters
    and the first-run mark (health), the backup verify cache (backup-check), the days
    already reported (daily-report). Checks run in threads, so `save` takes a lock.

    Times are `time.monotonic()` plus the boot time: the monotonic clock does not
    jump with NTP or a manual `date -s`, and a changed boot time means a reboot
    reset every counter.
    """

    def __init__(self, previous: dict | None = None, clock=time.monotonic):
        self.previous = previous if isinstance(previous, dict) else {}
        self.updates: dict = {}
        self.clock = clock
        self._lock = threading.Lock()

    def baseline(self, key: str, boot: float, now: float, numbers=()):
        """The counters saved under `key`, or None when they cannot serve as a baseline.

        Not after a reboot (another boot time); not when saved "after" `now`: a state
        folder restored from a backup or copied from another host would otherwise pin
        the baseline until the clock caught up with it; not when a field in `numbers`
        is not a number, which would fail every run until the file was fixed.
        """
        prev = self.previous.get(key)
        if not isinstance(prev, dict) or prev.get("boot") != boot or not is_number(prev.get("time")):
            return None
        if prev["time"] > now or not all(is_number(prev.get(field)) for field in numbers):
            return None
        return prev

    def save(self, key: str, value) -> None:
        with self._lock:
            self.updates[key] = value

    def to_write(self, keep_untouched: bool) -> dict | None:
        """What the file should hold after this run, or None when it need not be written.

        Entries this run did not touch are kept (`keep_untouched`: host counters, days
        reported) or dropped (the backup cache keeps only current files); so a run that
        saved nothing still rewrites a file that held anything when untouched entries go.
        """
        if not self.updates and not (self.previous and not keep_untouched):
            return None
        return {**self.previous, **self.updates} if keep_untouched else dict(self.updates)


class FolderRefused(StateError):
    """A root run must not use the state folder: others could write it (monitor/safety.py)."""


def ensure_folder(path: str) -> None:
    """Create the state folder if missing (owned as safety.owner_for says when root);
    raise FolderRefused for one a root run must not use, StateError if unusable."""
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


POLL = 0.005  # how often a waiting run that cannot sleep on the wake lock looks at the run lock


class RunLock:
    """One run of a command at a time, locked on the state folder itself.

    A lock on `state/<command>.lock` is lost with the file: `rm state/health.lock`
    during a run let the next run start at once. So the lock is an open-file-description
    read lock on one byte of the state folder (the command's own byte: commands run in
    parallel), tested and set under a short flock of the folder, and dropped by the
    kernel when the run ends or dies. `<command>.lock` only names the holder's PID for
    the next run's message, and its mtime says when the command last ran (the cron check).
    """

    def __init__(self, folder: str, command: str, wait: float = 30.0):
        self.folder = folder
        self.path = os.path.join(folder, f"{command}.lock")
        self.command, self.wait = command, wait
        self.byte = zlib.crc32(command.encode())
        self.fd: int | None = None
        self.wake_fd: int | None = None  # `<command>.lock`, write-locked on byte 0 (see _wait_for_holder)
        self.problem: str | None = None  # a PID file that was refused (a planted link): say so

    def acquire(self) -> None:
        """Take the lock, waiting up to `wait` seconds. Raise LockHeld naming the holder."""
        try:
            fd = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:  # missing, a file in the way
            raise StateError(f"cannot open {self.folder}: {exc.strerror}") from None
        deadline = time.monotonic() + self.wait
        try:
            while not self._try(fd):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise LockHeld(self.command, self._holder(), self.path, self.wait)
                self._wait_for_holder(left)  # only when another run holds the lock
        except OSError as exc:
            os.close(fd)
            self._drop_wake()
            raise StateError(f"cannot lock {self.path}: {exc.strerror}") from None
        except BaseException:
            os.close(fd)
            self._drop_wake()
            raise
        self.fd = fd
        self._write_pid()

    def _wait_for_holder(self, left: float) -> None:
        """Return when the holder's run has ended, or after `left` seconds.

        The holder also keeps a write lock on byte 0 of `<command>.lock` (the wake lock):
        a waiter blocks on it (F_OFD_SETLKW, in a thread, for the deadline) and the kernel
        wakes one waiter when the holder's descriptors close; that waiter keeps the wake
        lock into its own run, so the others sleep on. A waiter that already holds the
        wake lock (the run lock was taken meanwhile by a run without it: a removed PID
        file, an older monitor) or cannot use it (a planted file) looks every POLL seconds.
        """
        if self.wake_fd is None:
            try:
                wake = open_regular(self.path, os.O_RDWR | os.O_CREAT, FILE_MODE)
            except OSError:
                wake = None
            if wake is not None:
                started = time.monotonic()
                if _block(wake, left):
                    self.wake_fd = wake
                    return
                left -= time.monotonic() - started  # the thread owns and closes `wake`
        if left > 0:
            time.sleep(min(POLL, left))

    def _drop_wake(self) -> None:
        if self.wake_fd is not None:
            os.close(self.wake_fd)
            self.wake_fd = None

    def _try(self, fd: int) -> bool:
        """Under the folder's flock: if no other run holds this command's byte, take it."""
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                return False  # another run is taking or testing its lock: a moment
            raise
        try:
            if not hasattr(fcntl, "F_OFD_GETLK"):  # a StateError: the run goes on, unlocked, and says so
                raise OSError(errno.ENOSYS, "open file description locks need Linux 3.15 or later")
            found = fcntl.fcntl(fd, fcntl.F_OFD_GETLK, _flock(fcntl.F_WRLCK, self.byte))
            if struct.unpack(_FLOCK, found)[0] != fcntl.F_UNLCK:
                return False
            fcntl.fcntl(fd, fcntl.F_OFD_SETLK, _flock(fcntl.F_RDLCK, self.byte))
            return True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def _write_pid(self) -> None:
        try:
            # Write, then cut: a waiter reading meanwhile sees a PID, never an empty file.
            if self.wake_fd is None:
                self.wake_fd = open_regular(self.path, os.O_RDWR | os.O_CREAT, FILE_MODE)
                try:  # the wake lock, unless a waiter woken by the last holder has it for a moment
                    fcntl.fcntl(self.wake_fd, fcntl.F_OFD_SETLK, _flock(fcntl.F_WRLCK, 0))
                except OSError:
                    pass
            pid = f"{os.getpid()}\n".encode()
            os.pwrite(self.wake_fd, pid, 0)
            os.ftruncate(self.wake_fd, len(pid))
        except UnsafeFile as exc:  # the lock holds; whoever planted it must be heard of
            self.problem = f"cannot write {self.path}: {exc.strerror}"
        except OSError:
            pass  # the PID only names the holder in the next run's message; the lock holds

    def _holder(self) -> int | None:
        try:
            return int(read_file(self.path, 32).decode().strip() or 0) or None
        except (OSError, ValueError):
            return None

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing drops the lock
            self.fd = None
        self._drop_wake()  # and wakes the next waiter


# struct flock of Linux (x86_64, aarch64): l_type, l_whence, l_start, l_len, l_pid.
_FLOCK = "hhqqi4x"


def _flock(kind: int, byte: int) -> bytes:
    return struct.pack(_FLOCK, kind, os.SEEK_SET, byte, 1, 0)


def _block(fd: int, timeout: float) -> bool:
    """Take a write lock on byte 0 of `fd`, waiting up to `timeout`; True if taken.

    On a timeout the waiting thread keeps `fd` and closes it when its wait ends, so a
    lock granted after the caller gave up is dropped at once, never held by nobody.
    """
    state = {"taken": False, "abandoned": False}
    guard, done = threading.Lock(), threading.Event()

    def wait():
        try:
            fcntl.fcntl(fd, fcntl.F_OFD_SETLKW, _flock(fcntl.F_WRLCK, 0))
            taken = True
        except OSError:
            taken = False
        with guard:  # decided under the guard: the caller gave up before this, or it takes the lock
            state["taken"] = taken
            if state["abandoned"] or not taken:
                os.close(fd)
            done.set()

    threading.Thread(target=wait, name="run-lock-wait", daemon=True).start()
    done.wait(timeout)
    with guard:
        state["abandoned"] = not done.is_set()
        return state["taken"] and done.is_set()


class LockHeld(Exception):
    def __init__(self, command, pid, path, waited):
        holder = f"PID {pid}" if pid else "another process"
        super().__init__(f"another `monitor {command}` run ({holder}) holds {path}; "
                         f"gave up after {waited:g}s")
