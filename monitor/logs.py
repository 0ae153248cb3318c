"""JSON logs: one line per record appended to logs/<name>.log, archived daily.

Each record is written with a single write(2) on an O_APPEND descriptor, so a cron
run and an SSH run appending at once never interleave half-lines. A log whose first
record is from an earlier day is split by day into logs/archive/<name>-DAY.log.gz by
the next run, and archives older than the retention are removed.
"""

import errno
import logging
import os
import re
from datetime import date, datetime, timedelta

from pythonjsonlogger.json import JsonFormatter

from monitor import safety
from monitor.redact import RedactingFilter, scrub
from monitor.state import UnsafeFile, create_temp, open_regular, read_file
from monitor.text import printable  # also registers the "monitor.printable*" codec handlers

LOG_MODE = 0o640
LOG_FOLDER_MODE = 0o750
LOGGER = "monitor"


class IsoJsonFormatter(JsonFormatter):
    """python-json-logger with ISO 8601 local timestamps carrying their offset."""

    def formatTime(self, record, datefmt=None):
        return datetime.fromtimestamp(record.created).astimezone().isoformat(timespec="milliseconds")


class AppendHandler(logging.Handler):
    """Append each formatted record to a file in one write; remember the first failure."""

    def __init__(self, path: str, refused: str | None = None):
        super().__init__()
        self.path = path
        self.error: str | None = refused
        self.fd: int | None = None
        if not refused:
            self.reopen()

    def reopen(self):
        """Open the file now at `path` (the daily archive moves the one opened before)."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        try:
            self.fd = open_regular(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, LOG_MODE)
        except OSError as exc:
            self.error = self.error or f"cannot write {self.path}: {exc.strerror}"

    def emit(self, record):
        if self.fd is None:
            return
        try:
            # Scrub the final line too: extra fields (dicts) are not seen by the filter.
            # An undecodable byte that reached a record (a file name) is written as \\xff.
            self._append((scrub(self.format(record)) + "\n").encode("utf-8", "monitor.printable-json"))
        except OSError as exc:
            self.error = self.error or f"cannot write {self.path}: {exc.strerror}"
        except Exception:  # a formatting bug must not take the run down
            self.handleError(record)

    def _append(self, data: bytes) -> None:
        written = 0
        try:
            while written < len(data):  # one write(2), unless the disk takes only part of it
                written += os.write(self.fd, data[written:])
        except OSError:
            # A full disk or RLIMIT_FSIZE cut the record short: take the torn half back, so
            # the next record, once there is room, starts a line of its own.
            if written:
                try:
                    os.ftruncate(self.fd, os.lseek(self.fd, 0, os.SEEK_END) - written)
                except OSError:
                    pass
            raise

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        super().close()


class PrintableFormatter(logging.Formatter):
    """Console lines (-v) with outside text printable, line by line (a traceback keeps its lines)."""

    def format(self, record):
        return "\n".join(printable(line) for line in super().format(record).split("\n"))


def open_log(folder: str, name: str, verbose: int = 0) -> AppendHandler:
    """Route the `monitor` logger to logs/<name>.log (and to stderr with -v)."""
    logger = logging.getLogger(LOGGER)
    for old in list(logger.handlers):
        logger.removeHandler(old)
        old.close()
    logger.setLevel(logging.DEBUG if verbose > 1 else logging.INFO)
    logger.propagate = False

    refused = None
    try:
        safety.prepare(folder, LOG_FOLDER_MODE)  # owned as safety.owner_for says when root
    except safety.Refused as exc:
        refused = str(exc)  # a folder others can write: no log file opened in it
    except OSError:
        pass  # the handler reports the failure with the file name
    handler = AppendHandler(os.path.join(folder, f"{name}.log"), refused=refused)
    handler.addFilter(RedactingFilter())
    handler.setFormatter(IsoJsonFormatter("%(asctime)s %(levelname)s %(message)s",
                                          json_ensure_ascii=False, json_default=str))
    logger.addHandler(handler)
    if verbose:
        console = logging.StreamHandler()
        console.setFormatter(PrintableFormatter("%(levelname)s %(name)s: %(message)s"))
        # urllib3's debug lines carry request URLs, and the bot token is in the URL.
        console.addFilter(RedactingFilter())
        logger.addHandler(console)
        if verbose > 1:
            logging.getLogger().addHandler(console)  # urllib3 and friends
            logging.getLogger().setLevel(logging.DEBUG)
    return handler


def close_log() -> None:
    logger = logging.getLogger(LOGGER)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()


# --- daily archive -------------------------------------------------------------------

_ASCTIME = b'"asctime": "'


def _record_day(line: bytes) -> str | None:
    """The day of a record, from its asctime (our own formatter's layout)."""
    at = line.find(_ASCTIME, 0, 200)
    day = line[at + len(_ASCTIME):at + len(_ASCTIME) + 10] if at != -1 else b""
    return day.decode() if len(day) == 10 and day[4:5] == b"-" and day[:4].isdigit() else None


def archive_if_stale(folder: str, name: str, today: date, retention_days: int) -> list[str]:
    """Archive logs/<name>.log by day if it starts before `today`; return archives written.

    Runs under the command's lock, so nothing else appends to this log meanwhile.
    Everything in logs/archive is reached through one descriptor of that folder,
    opened without following a link, and each file there with `open_regular`: a
    planted symlink (`NAME.log.pending -> /root/secret`) or FIFO raises UnsafeFile.
    """
    path = os.path.join(folder, f"{name}.log")
    archive_dir = os.path.join(folder, "archive")
    pending = f"{name}.log.pending"
    archive = _open_archive_folder(archive_dir, create=False)
    try:
        if archive is None or not _exists(pending, archive):  # a pending file: a run died mid-way
            try:
                first = read_file(path, 4096).split(b"\n", 1)[0]
            except FileNotFoundError:
                return []
            day = _record_day(first)
            if not first or (day or today.isoformat()) >= today.isoformat():
                return []
            if archive is None:
                archive = _open_archive_folder(archive_dir, create=True)
            os.replace(path, pending, dst_dir_fd=archive)
            _reopen_handlers(path)  # else this run's own records would go to the moved file
        written = _split_by_day(archive, archive_dir, pending, folder, name, today)
        os.unlink(pending, dir_fd=archive)
        _apply_retention(archive, name, today, retention_days)
        return written
    except UnsafeFile as exc:
        if not os.path.isabs(exc.filename):  # a name inside logs/archive: say which file
            raise UnsafeFile(os.path.join(archive_dir, exc.filename), exc.what) from None
        raise
    finally:
        if archive is not None:
            os.close(archive)


def _open_archive_folder(archive_dir: str, create: bool) -> int | None:
    """A descriptor of logs/archive (None if it is missing and not `create`); never a link."""
    if create:
        try:
            os.mkdir(archive_dir, LOG_FOLDER_MODE)
        except FileExistsError:
            pass
    try:
        return os.open(archive_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        if create:
            raise
        return None
    except OSError as exc:  # O_DIRECTORY|O_NOFOLLOW says ENOTDIR (or ELOOP) for a link
        if exc.errno in (errno.ELOOP, errno.ENOTDIR) and os.path.islink(archive_dir):
            raise UnsafeFile(archive_dir, "a symbolic link") from None
        raise


def _exists(name: str, dir_fd: int) -> bool:
    try:
        os.lstat(name, dir_fd=dir_fd)
        return True
    except FileNotFoundError:
        return False


def _reopen_handlers(path: str) -> None:
    for handler in logging.getLogger(LOGGER).handlers:
        if isinstance(handler, AppendHandler) and handler.path == path:
            handler.reopen()


def _split_by_day(archive: int, archive_dir: str, pending: str, folder: str, name: str, today: date) -> list[str]:
    import gzip

    outputs: dict[str, tuple] = {}
    current = None
    live = None
    try:
        with open(open_regular(pending, dir_fd=archive), "rb") as source:
            for line in source:
                day = _record_day(line) or current or today.isoformat()
                current = day
                if day >= today.isoformat():
                    if live is None:
                        live = open(open_regular(os.path.join(folder, f"{name}.log"),
                                                 os.O_WRONLY | os.O_APPEND | os.O_CREAT, LOG_MODE), "ab")
                    live.write(line)
                    continue
                if day not in outputs:
                    target = f"{name}-{day}.log.gz"
                    fd, tmp = create_temp(archive_dir, target, LOG_MODE, dir_fd=archive)
                    raw = open(fd, "wb")
                    outputs[day] = (target, tmp, raw, None)
                    os.fchmod(fd, LOG_MODE)  # never wider than the log, whatever the umask
                    try:  # gzip members concatenate: keep what is there
                        raw.write(read_file(target, dir_fd=archive))
                    except FileNotFoundError:
                        pass
                    outputs[day] = (target, tmp, raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0))
                outputs[day][3].write(line)
        for target, tmp, raw, zipped in outputs.values():
            zipped.close()
            raw.flush()
            os.fsync(raw.fileno())
            raw.close()
            os.replace(tmp, target, src_dir_fd=archive, dst_dir_fd=archive)
    except BaseException:
        for target, tmp, raw, zipped in outputs.values():
            raw.close()
            try:
                os.unlink(tmp, dir_fd=archive)
            except OSError:
                pass
        raise
    finally:
        if live is not None:
            live.close()
    return sorted(os.path.join(archive_dir, target) for target, *_ in outputs.values())


def _apply_retention(archive: int, name: str, today: date, retention_days: int) -> None:
    oldest = (today - timedelta(days=retention_days)).isoformat()
    pattern = re.compile(rf"{re.escape(name)}-(\d{{4}}-\d{{2}}-\d{{2}})\.log\.gz")
    for entry in os.listdir(archive):
        match = pattern.fullmatch(entry)
        if match and match.group(1) < oldest:
            os.unlink(entry, dir_fd=archive)
