"""The `log:<name>` checks: the error rate of an application's logs since the previous run.

Measures, then judges with the shared thresholds. Each run reads only what was appended
since the last one, as check_logfiles does: per file (device and inode) the offset, a
fingerprint of its first bytes and its kind (JSON lines or plain text) in the carried
state. A file renamed (logrotate's default, dateext, `app.log.1` in a glob) goes on from
its offset under its new name; one renamed out of the glob is finished where it went (its
folder, by inode) or from its gzip copy (`compress` without `delaycompress`), and when
neither is found the message says its end is unread; one truncated or rewritten in place
(copytruncate, an inode reused) is read again from its start; a line still being written
is left for the next run. Which lines are error records is `monitor/logscan.py`'s to say,
as for the daily report.
"""

import contextlib
import glob
import itertools
import os
import re
import stat
import time
from datetime import datetime
from functools import partial

from monitor import logscan
from monitor.results import OK, UNKNOWN, Result, is_number, worst
from monitor.runner import Check
from monitor.text import clip
from monitor.units import format_duration, format_size

# The first run reads at most this much of a file's end (and of that, initial_window's records).
FIRST_RUN_TAIL = 1 << 20
# A file first seen after the first run (a glob matching a new name, an edited path): at most
# this much of its end, and of that the records since the previous run.
NEW_FILE_TAIL = 8 << 20
LINE_CAP = 1 << 20       # a longer line is one record judged by its head, the rest skipped
HEAD_BYTES = 64          # the fingerprint: a hash of a file's first bytes (of fewer when it was shorter)
KIND_BYTES = 4096        # a file's kind is read from its first bytes, not from where a run starts
MAX_FILES = 1000         # files one check follows (the most recently written); the rest is said, not read
GLOB_LIMIT = 10 * MAX_FILES  # names of a glob looked at, at most
KEEP_SECONDS = 86400     # a name gone (nocreate), or a file renamed out of the glob, is kept this long
DIR_SCAN_LIMIT = 100_000  # folder entries looked at to find a renamed file by its inode
MIN_WINDOW = 60.0        # a rate is taken over at least a minute: one error 5 s after a run is not 12/min
MIN_RECORDS = 20         # error_ratio is judged from this many records: 1 of 1 is not 100 %
SHOWN, LISTED = 5, 10    # problems named in the message; files and problems listed in details
ITEM_CHARS = 120         # each of them clipped to this in the message (a path may be 4 KB)
# Compressed rotations a glob such as "app.log*" matches: never read as text (a gzip copy is
# read only as the end of a file followed before, see _Scanner._copy).
COMPRESSED = (".gz", ".bz2", ".xz", ".zst", ".zip", ".lz4")
LAST_LINE_CHARS = 300
TIMEOUT_SECONDS = 60.0
# A gzip copy is decompressed from its start up to where its file was read to, each run that
# reads it: at most this much a run (ISA-L: about 1 s a GiB), the rest waits for the next run.
UNZIP_SKIP_LIMIT = 2 << 30
# Rules and panels for the logs that set one threshold only (and for other hosts' logs).
DEFAULT_LEVELS = {"errors_per_minute": (1, 10), "error_ratio": (0.05, 0.2)}


class Tally:
    """What the lines read this run hold: records, errors, the last error line, bytes."""

    def __init__(self, pattern, tz):
        # MULTILINE: it runs over blocks of lines, and "^ERROR" means at the start of a line.
        self.pattern = re.compile(pattern.encode(), re.MULTILINE) if pattern else None
        self.tz, self.records, self.errors, self.bytes_read, self.last_error = tz, 0, 0, 0, None

    def child(self) -> "Tally":
        """An empty tally counting as this one does: merged only if what it read is kept."""
        child = Tally(None, self.tz)
        child.pattern = self.pattern
        return child

    def merge(self, other: "Tally") -> None:
        self.records += other.records
        self.errors += other.errors
        self.bytes_read += other.bytes_read
        self.last_error = other.last_error or self.last_error

    def block(self, data, lo: int, hi: int, json_lines: bool) -> None:
        """Count the whole lines data[lo:hi]: every line is a record."""
        records, errors, last = logscan.count_block(data, lo, hi, json_lines, self.pattern)
        self.records += records
        self.errors += errors
        if last:
            self.last_error = data[last[0]:min(last[1], last[0] + 4 * LAST_LINE_CHARS)]

    def tail(self, data, lo: int, hi: int, json_lines: bool, since: datetime) -> None:
        """Only the records whose own time is `since` or later count (a first run, a new file)."""
        for line in data[lo:hi].split(b"\n"):
            when = logscan.record_time(line, self.tz)
            if when is None or when < since:
                continue
            self.records += 1
            if self.is_error(line, json_lines):
                self.errors += 1
                self.last_error = line

    def is_error(self, line, json_lines: bool) -> bool:
        """As `block` judges a line: the pattern, a JSON log's level field, or the plain rule."""
        if self.pattern is not None:
            return self.pattern.search(line) is not None
        if json_lines:
            return logscan.LEVEL_FIELD.search(line) is not None and logscan.is_error_json(line)
        return logscan.is_error_line(line)


class Scan:
    """What one run of a check read: the tally, the files' new state and what it could not do."""

    def __init__(self, tally: Tally):
        self.tally, self.files, self.names, self.problems = tally, {}, {}, []
        self.left, self.matched, self.rotated_unread, self.more = 0, 0, [], False
        self.opened, self.unopened = 0, 0  # files matching that were opened, that could not be
        self.unzip_waits, self.too_deep = False, []  # UNZIP_SKIP_LIMIT reached this run; past it, unread


def _open(path: str):
    """An application's log: symlinks followed (app.log -> app-2026.log), never a FIFO."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise OSError(f"not a regular file: {path}")
    return os.fdopen(fd, "rb", buffering=0), info


def _key(info) -> str:
    return f"{info.st_dev}:{info.st_ino}"


def _fingerprint(data) -> str:
    import hashlib  # a run without [[logfiles]] never needs it

    return hashlib.blake2b(bytes(data), digest_size=8).hexdigest()


def _same_head(handle, entry: dict) -> bool:
    """Whether the file still starts as it did when `entry` was saved (not truncated and
    written again past the old offset, nor another file under a reused inode)."""
    length = min(HEAD_BYTES, entry["offset"])
    if not length or "head" not in entry:  # nothing read yet, or a state from before fingerprints
        return True
    data = os.pread(handle.fileno(), length, 0)
    return len(data) == length and _fingerprint(data) == entry["head"]


def _kind(handle) -> str | None:
    """"json" or "plain" by the file's first bytes (white space aside); None while it has none."""
    head = os.pread(handle.fileno(), KIND_BYTES, 0)
    return ("json" if logscan.is_json_lines(head) else "plain") if head.strip() else None


def _read(handle, start, budget: int, tally: Tally, kind, cap: int, since=None, skipping=False,
          partial_last=False) -> tuple[int, bool, bool]:
    """Read whole lines from `start` (None: where `handle` stands) within `budget` bytes.

    Returns (bytes consumed, inside an over-long line, stopped by the budget)."""
    if start is not None:
        handle.seek(start)
    blocks = logscan.Blocks(handle, cap, limit=budget, partial_last=partial_last, skipping=skipping)
    after = datetime.fromtimestamp(since, tally.tz) if since is not None else None
    for data, lo, hi in blocks:
        if after is None:
            tally.block(data, lo, hi, kind == "json")
        else:
            tally.tail(data, lo, hi, kind == "json", after)
    tally.bytes_read += blocks.consumed
    return blocks.consumed, blocks.skipping, blocks.exhausted


def _entry(handle, path: str, offset: int, kind, skipping: bool, info, prev_time) -> dict:
    length = min(HEAD_BYTES, offset)
    entry = {"path": path, "offset": offset, "head": _fingerprint(os.pread(handle.fileno(), length, 0)),
             "kind": kind, "idle": prev_time is not None and info.st_mtime < prev_time}
    if skipping:
        entry["skip"] = True
    return entry


def _valid(entry) -> bool:
    """A file's state as this module writes it (a hand-edited one must not fail every run)."""
    return (isinstance(entry, dict) and isinstance(entry.get("path"), str) and type(entry.get("offset")) is int
            and entry["offset"] >= 0 and isinstance(entry.get("head", ""), str)
            and entry.get("kind") in (None, "json", "plain")
            and all(entry.get(field) is None or is_number(entry[field]) for field in ("since", "moved")))


def _known(previous: dict | None, current: dict) -> dict:
    """The files the previous run followed, by device and inode. A state written before
    they were keyed so (path -> {inode, offset}) is taken over for the files still there."""
    saved = previous.get("files") if previous else None
    if not isinstance(saved, dict):
        return {}
    known, by_path = {}, {path: key for key, (path, _) in current.items()}
    for key, entry in list(saved.items())[:2 * MAX_FILES]:
        if _valid(entry) and re.fullmatch(r"\d+:\d+", key):
            known[key] = entry
        elif isinstance(entry, dict) and key in by_path and type(entry.get("offset")) is int \
                and entry["offset"] >= 0 and entry.get("inode") == current[by_path[key]][1].st_ino:
            known[by_path[key]] = {"path": key, "offset": entry["offset"], "kind": None}
    return known


def scan(cfg: dict, previous: dict | None, now: float, tz) -> Scan:
    """Read what each file of `cfg` gained since `previous` (None: the first run)."""
    return _Scanner(cfg, previous, now, tz).run()


class _Scanner:
    """One run's reading of one [[logfiles]] entry, within its max_bytes."""

    def __init__(self, cfg: dict, previous: dict | None, now: float, tz):
        self.cfg, self.now, self.result = cfg, now, Scan(Tally(cfg["pattern"], tz))
        self.prev_time = previous.get("time") if previous and is_number(previous.get("time")) else None
        self.previous = previous
        self.budget, self.cap = cfg["max_bytes"], min(LINE_CAP, cfg["max_bytes"])
        self.unzip_left = UNZIP_SKIP_LIMIT
        self.folders: dict = {}
        self.current: dict = {}  # key -> (path, stat) of the files matching now
        self.known: dict = {}
        # key -> entry: a copy the glob matches that goes on where the file it copies stopped
        # (copytruncate's NAME.1 under "NAME*"), so that what was read before is not read twice.
        self.adopted: dict = {}

    def run(self) -> Scan:
        result, previous = self.result, self.previous
        names = previous.get("names") if previous and isinstance(previous.get("names"), dict) else {}
        result.names = {path: seen for path, seen in list(names.items())[:2 * MAX_FILES]
                        if isinstance(path, str) and is_number(seen) and 0 <= self.now - seen < KEEP_SECONDS}
        self.current = self._matching()
        known = self.known = _known(previous, self.current)
        # The ends of the files that left the glob first: written before their successors.
        for key, entry in known.items():
            if key not in self.current:
                self._gone(key, entry)
        # Path order: a copy (NAME.1, NAME-DATE) comes after the name it copies, which adopts it.
        for key, (path, _) in self.current.items():
            self._follow(path, key, known.get(key) or self.adopted.get(key))
        return result

    def _matching(self) -> dict:
        """The regular files the glob matches, by device and inode (two names of one file, a
        symlink and its target, are read once): the MAX_FILES most recently written."""
        found, result = [], self.result
        # Compressed names left out before the limit: a folder of 10 000 old .gz is not 10 000 logs.
        paths = itertools.islice((p for p in glob.iglob(self.cfg["path"]) if not p.lower().endswith(COMPRESSED)),
                                 GLOB_LIMIT)
        for path in sorted(paths):
            try:
                info = os.stat(path)
            except OSError as exc:
                result.problems.append(f"{path}: {exc.strerror or exc}")
                continue
            if not stat.S_ISREG(info.st_mode):
                result.problems.append(f"{path}: not a regular file")
                continue
            found.append((path, info))
        result.matched = len(found)
        if len(found) > MAX_FILES:
            found = sorted(sorted(found, key=lambda item: -item[1].st_mtime)[:MAX_FILES])
        current: dict = {}
        for path, info in found:
            current.setdefault(_key(info), (path, info))
        return current

    def _read(self, handle, start, entry_like: dict, tally=None, partial_last=False) -> tuple[int, bool, bool]:
        read, skipping, cut = _read(handle, start, self.budget, tally or self.result.tally, entry_like.get("kind"),
                                    self.cap, entry_like.get("since"), bool(entry_like.get("skip")), partial_last)
        self.budget -= read
        return read, skipping, cut

    def _follow(self, path: str, key: str, entry: dict | None) -> None:
        """Read what the file at `path` gained: from its saved offset, or where a new file starts."""
        result, prev_time = self.result, self.prev_time
        try:
            handle, info = _open(path)
        except OSError as exc:  # EACCES, EIO: its state stays, and what it gained is read once it opens
            result.problems.append(f"{path}: {exc.strerror or exc}")
            result.unopened += 1
            if entry:
                result.files[key] = entry
                result.names[path] = self.now
            return
        result.opened += 1
        with handle:
            if _key(info) != key:  # replaced since the glob: the next run reads it
                if entry:
                    result.files[key] = entry
                return
            size, state = info.st_size, {}
            if entry and size >= entry["offset"] and _same_head(handle, entry):
                start, state = entry["offset"], entry
            elif entry:  # truncated or rewritten in place (copytruncate), or another file on a reused inode
                if self._copy(key, entry) == "cut":  # the old content first, over the next runs
                    result.left += size
                    return
                start = 0
            elif prev_time is None:  # the end of a file that may be a year old
                start = _line_start(handle, max(0, size - FIRST_RUN_TAIL), size)
                state = {"since": self.now - self.cfg["initial_window"]}
            elif path in result.names:  # a name followed before: the file that took its place (rotation)
                start = 0
            elif info.st_mtime < prev_time:  # new to this check, and nothing written since the last run
                start = _last_line_end(handle, size)
            else:  # new to this check (a glob matching a new name, an edited path): its recent records
                start, state = _line_start(handle, max(0, size - NEW_FILE_TAIL), size), {"since": prev_time}
            state = {**state, "kind": state.get("kind") or _kind(handle)}
            read, skipping, cut = self._read(handle, start, state)
            offset = start + read
            if cut and offset < size:  # max_bytes reached: the rest is the next run's
                result.left += size - offset
            saved = _entry(handle, path, offset, state["kind"], skipping, info, prev_time)
            if state.get("since") is not None and cut and offset < size:  # still reading records by their time
                saved["since"] = state["since"]
            result.files[key] = saved
            result.names[path] = self.now

    def _gone(self, key: str, entry: dict) -> None:
        """A file followed before that the glob no longer matches: renamed (read on where it
        went, for a day), copied or compressed (finished from the copy), or gone."""
        path, moved = entry["path"], entry.get("moved")
        try:
            there = _key(os.stat(path)) == key
        except OSError:
            there = False
        if there and moved is None:  # it stands where it was: the glob or the path changed, let it go
            return
        where = path if there else _find_inode(os.path.dirname(path) or ".", key, self.folders)
        if where is not None:
            if moved is not None and self.now - moved > KEEP_SECONDS:
                return
            try:
                handle, info = _open(where)
            except OSError:
                handle = None
            if handle is not None:
                with handle:
                    if _key(info) == key and info.st_size >= entry["offset"] and _same_head(handle, entry):
                        read, skipping, cut = self._read(handle, entry["offset"], entry)
                        offset = entry["offset"] + read
                        if cut and offset < info.st_size:
                            self.result.left += info.st_size - offset
                        kept = _entry(handle, where, offset, entry["kind"], skipping, info, self.prev_time)
                        kept["moved"] = moved if moved is not None else self.now
                        if entry.get("since") is not None and cut:
                            kept["since"] = entry["since"]
                        self.result.files[key] = kept
                        return
        self._copy(key, entry)

    def _copy(self, key: str, entry: dict):
        """Finish a file followed before from a copy of it (copytruncate's NAME.1, compress's
        NAME.1.gz, dateext's): the first whose first bytes have its fingerprint, read after
        its offset within the budget. A copy the glob matches is read as its own file.

        Returns "done", "cut" (max_bytes reached: the entry is kept for the next run) or None
        (no copy: the message says its end is unread, unless it had stopped changing)."""
        offset, length = entry["offset"], min(HEAD_BYTES, entry["offset"])
        in_glob = False
        for name in _copies(entry["path"]):
            try:
                raw, info = _open(name)
            except OSError:
                continue
            with raw:
                if _key(info) == key:
                    continue
                if _key(info) in self.current:
                    in_glob = True
                    # Not read as a new file from 0: it goes on from the offset (once, if not followed already).
                    if (length and _key(info) not in self.known and not self.adopted.get(_key(info))
                            and info.st_size >= offset and _same_head(raw, entry)):
                        self.adopted[_key(info)] = {**entry, "path": name}
                        return None
                    continue
                if not length and (self.prev_time is None or info.st_mtime < self.prev_time):
                    continue  # nothing to check it by, and written before the last run: not this one
                sub = self.result.tally.child()
                try:
                    with contextlib.ExitStack() as stack:
                        stream = stack.enter_context(_gzip_reader(raw)) if name.endswith(".gz") else raw
                        head = stream.read(length)
                        if len(head) != length or (length and "head" in entry and _fingerprint(head) != entry["head"]):
                            continue
                        if stream is raw:
                            if info.st_size < offset:
                                continue
                            raw.seek(offset)
                        else:
                            if length and _gzip_size(raw, info) == offset % (1 << 32):
                                return "done"  # its size is where the file was read to: nothing to decompress
                            if self.budget <= 0 or offset - length > self.unzip_left:
                                return self._later(key, entry, offset - length)
                            if not _skip(stream, offset - length):
                                continue
                            self.unzip_left -= offset - length
                        read, skipping, cut = self._read(stream, None, entry, sub, partial_last=True)
                except Exception:  # noqa: BLE001 - damaged, truncated (still being written) or not gzip: not this one
                    continue
            self.result.tally.merge(sub)
            if not cut:
                return "done"
            kept = {**entry, "offset": offset + read}
            if length < HEAD_BYTES:  # the fingerprint grows with what was read, up to HEAD_BYTES
                kept["head"] = _fingerprint(_first_bytes(name, min(HEAD_BYTES, offset + read)))
            kept.pop("skip", None)
            if skipping:
                kept["skip"] = True
            self.result.files[key] = kept
            self.result.more = True  # how much is left in a gzip copy is not known without reading it
            return "cut"
        if not in_glob and not entry.get("idle"):
            self.result.rotated_unread.append(entry["path"])
        return None


    def _later(self, key: str, entry: dict, skip: int):
        """A gzip copy not decompressed this run (no budget left, or UNZIP_SKIP_LIMIT): "cut",
        the entry kept; None when its end lies past what one run decompresses (said, unread)."""
        if skip > UNZIP_SKIP_LIMIT:
            self.result.too_deep.append(entry["path"])
            return None
        self.result.files[key] = entry
        self.result.more = True
        self.result.unzip_waits = self.result.unzip_waits or self.budget > 0
        return "cut"


def _gzip_size(raw, info) -> int | None:
    """The size a gzip file's trailer gives (of its last member, modulo 2**32)."""
    tail = os.pread(raw.fileno(), 4, info.st_size - 4) if info.st_size >= 18 else b""
    return int.from_bytes(tail, "little") if len(tail) == 4 else None


def _find_inode(folder: str, key: str, folders: dict) -> str | None:
    """The name `key` (device:inode) has now in `folder` (each folder listed once a run)."""
    if folder not in folders:
        found: dict = {}
        try:
            with os.scandir(folder) as entries:
                for item in itertools.islice(entries, DIR_SCAN_LIMIT):
                    found.setdefault(item.inode(), item.path)
        except OSError:
            pass
        folders[folder] = found
    where = folders[folder].get(int(key.split(":")[1]))
    if where is None:
        return None
    try:
        return where if _key(os.stat(where)) == key else None
    except OSError:
        return None


def _copies(path: str) -> list:
    """Where logrotate leaves the content of `path` when it is not found renamed: NAME.1
    (copytruncate), NAME.1.gz (compress), NAME.N+1.gz for NAME.N (delaycompress's next
    step), NAME.gz, and dateext's NAME-YYYYMMDD[.gz] (the newest two)."""
    names = [path + ".1", path + ".1.gz", path + ".gz"]
    number = re.search(r"\.(\d{1,6})$", path)
    if number:
        names.append(f"{path[:number.start()]}.{int(number.group(1)) + 1}.gz")
    dated = []
    for name in itertools.islice(glob.iglob(glob.escape(path) + "-*"), GLOB_LIMIT):
        try:
            dated.append((os.path.getmtime(name), name))
        except OSError:
            continue
    return names + [name for _, name in sorted(dated)[-2:][::-1]]


def _gzip_reader(raw):
    try:  # ISA-L's inflate: about twice zlib's speed (as for backup verification)
        from isal import igzip as gzip_module
    except ImportError:  # pragma: no cover - isal is a dependency; a distro build may lack it
        import gzip as gzip_module
    return gzip_module.GzipFile(fileobj=raw, mode="rb")


def _first_bytes(name: str, count: int) -> bytes:
    raw, _ = _open(name)
    with raw, (_gzip_reader(raw) if name.endswith(".gz") else contextlib.nullcontext(raw)) as stream:
        return stream.read(count)


def _skip(handle, count: int) -> bool:
    """Read past `count` bytes of a stream; False when it ends first."""
    scratch = bytearray(min(count, 1 << 20) or 1)
    while count > 0:
        n = handle.readinto(memoryview(scratch)[:min(count, len(scratch))])
        if not n:
            return False
        count -= n
    return True


def _line_start(handle, at: int, end: int) -> int:
    """The first line that starts at or after `at` (a line cut in two is not a record)."""
    if at == 0:
        return 0
    handle.seek(at - 1)
    while at - 1 < end:
        chunk = handle.read(min(1 << 16, end - at + 1))
        if not chunk:
            break
        newline = chunk.find(b"\n")
        if newline != -1:
            return at + newline
        at += len(chunk)
    return end


def _last_line_end(handle, end: int) -> int:
    """Where the last whole line of the first `end` bytes ends (looked for in the last MB)."""
    at = end
    while at > 0 and end - at < FIRST_RUN_TAIL:
        low = max(0, at - (1 << 16))
        newline = os.pread(handle.fileno(), at - low, low).rfind(b"\n")
        if newline != -1:
            return low + newline + 1
        at = low
    return at


def _listed(items: list, shown: int) -> str:
    """The first `shown` items joined (each clipped), and how many more."""
    text = "; ".join(clip(item, ITEM_CHARS) for item in items[:shown])
    return text + (f"; and {len(items) - shown} more" if len(items) > shown else "")


def logfile(cfg: dict, carried, now=time.time, tz=None) -> Result:
    """Judge one [[logfiles]] entry by the errors appended since the previous run."""
    key, wall = f"log:{cfg['name']}", now()
    tz = tz or datetime.now().astimezone().tzinfo
    previous = carried.previous.get(key) if isinstance(carried.previous.get(key), dict) else None
    found = scan(cfg, previous, wall, tz)
    tally, files = found.tally, found.files
    names = dict(sorted(found.names.items(), key=lambda item: item[1])[-2 * MAX_FILES:])
    carried.save(key, {"time": wall, "files": files, "names": names})
    paths = sorted({entry["path"] for entry in files.values()})
    problems = found.problems
    since = previous.get("time") if previous else None
    if not files and not found.names:
        message = f"no readable file matches {cfg['path']}" + (f" ({_listed(problems, SHOWN)})" if problems else "")
        return Result(UNKNOWN, message, details={"files": [], "files_total": 0, "problems": problems[:LISTED],
                                                 "problems_total": len(problems)})
    window = wall - since if is_number(since) and 0 < wall - since < 366 * 86400 else cfg["initial_window"]
    per_minute = round(tally.errors * 60 / max(window, MIN_WINDOW), 3)
    ratio = round(tally.errors / tally.records, 4) if tally.records else 0.0
    judged = tally.records >= MIN_RECORDS
    status, value, threshold, unit = OK, per_minute, cfg["errors_per_minute"], "/min"
    if cfg["errors_per_minute"]:
        status = cfg["errors_per_minute"].judge(per_minute)
    if cfg["error_ratio"]:
        by_ratio = cfg["error_ratio"].judge(ratio) if judged else OK
        if not cfg["errors_per_minute"] or worst(status, by_ratio) != status:
            value, threshold, unit = ratio if judged or not tally.errors else None, cfg["error_ratio"], "ratio"
        status = worst(status, by_ratio)
    message = (f"{tally.errors} error(s) in {tally.records} record(s) over {format_duration(window)} "
               f"({per_minute:g}/min{' over at least 1m' if window < MIN_WINDOW else ''}, {ratio * 100:.1f}%)")
    if cfg["error_ratio"] and not judged:
        message += f"; error ratio not judged under {MIN_RECORDS} records"
    if found.matched > MAX_FILES:
        message += f"; following the {MAX_FILES} most recently written of {found.matched} files matching"
    if not found.matched:  # still judged, for a day: logrotate's nocreate, an application restarting
        message += f"; no file matches {cfg['path']} now (rotated, not created again yet?)"
    if found.rotated_unread:
        message += (f"; {_listed(found.rotated_unread, SHOWN)}: rotated away and not found renamed nor "
                    f"compressed (NAME.1, NAME.1.gz, dateext), its end since the previous run is unread")
    if found.too_deep:
        message += (f"; {_listed(found.too_deep, SHOWN)}: its end lies past {format_size(UNZIP_SKIP_LIMIT)} into "
                    f"its gzip copy (more than a run decompresses), unread")
    unread = ([format_size(found.left)] if found.left else []) + (["the rest of a gzip copy"] if found.more else [])
    if unread:
        message += f"; {' and '.join(unread)} not read yet (max_bytes {format_size(cfg['max_bytes'])}"
        message += f", {format_size(UNZIP_SKIP_LIMIT)} decompressed to reach it), next run" if found.unzip_waits \
            else "), next run"
    if problems:
        message += f"; unreadable: {_listed(problems, SHOWN)}"
    if found.unopened:  # errors may be hiding there: not OK (a critical rate read elsewhere still shows)
        status = worst(status, UNKNOWN)
        message = (f"none of the {found.unopened} file(s) matching could be opened, unknown; " if not found.opened
                   else f"{found.unopened} of the {found.unopened + found.opened} file(s) matching could not be "
                   f"opened, unknown unless critical; ") + message
    details = {"records": tally.records, "errors": tally.errors, "window_seconds": round(window, 1),
               "errors_per_minute": per_minute, "error_ratio": ratio, "error_ratio_judged": judged,
               "bytes_read": tally.bytes_read, "bytes_left": found.left, "files": paths[:LISTED],
               "files_total": len(paths), "last_error": _shown(tally.last_error)}
    if found.rotated_unread or found.too_deep:
        details["rotated_unread"] = True
    if problems:
        details["problems"], details["problems_total"] = problems[:LISTED], len(problems)
    return Result(status, message, value=value, unit=unit, warning=threshold.warning if threshold else None,
                  critical=threshold.critical if threshold else None, details=details)


def _shown(line) -> str | None:
    """A log line as it may be shown: cut, secrets masked, printable."""
    if line is None:
        return None
    from monitor.redact import scrub

    text = bytes(line[:4 * LAST_LINE_CHARS]).decode("utf-8", "backslashreplace").strip()
    return clip(scrub(text), LAST_LINE_CHARS)


# --- what these checks export (the contract: monitor/checks/__init__.py) ----------------------

METRICS = {
    "monitor_log_errors_per_minute": ("Error records per minute appended to the log since the previous run.",
                                      ("log",)),
    "monitor_log_error_ratio": ("Error records / all records appended to the log since the previous run.",
                                ("log",)),
}
MEASURES = {"log": ("errors", False)}


def checks(config: dict, carried, shared=None) -> list:
    """One check per [[logfiles]] entry."""
    return [Check(f"log:{cfg['name']}", "logs", partial(logfile, cfg, carried), TIMEOUT_SECONDS)
            for cfg in config["logfiles"]]


def check_ids(config: dict) -> list[str]:
    return [f"log:{cfg['name']}" for cfg in config.get("logfiles") or []]


def samples(result) -> list:
    name, details = result.id.split(":", 1)[1], result.details or {}
    return [("monitor_log_errors_per_minute", {"log": name}, details.get("errors_per_minute")),
            # From too few records the ratio is not judged, nor exported for the rules to judge
            # (unless it is 0: a quiet log's panel still has its series).
            ("monitor_log_error_ratio", {"log": name}, details.get("error_ratio")
             if details.get("error_ratio_judged", True) or not details.get("errors") else None)]


def levels(config: dict) -> dict:
    """Each threshold's levels by log name, from the logs that set it; the logs that leave it
    out are listed under KEY_left_out (no rule of that threshold for them)."""
    from monitor.fleet.kit import Levels, per_name

    logs, out = config.get("logfiles") or [], {}
    for key, (warning, critical) in DEFAULT_LEVELS.items():
        fallback = Levels(warning, critical)
        setting = [log for log in logs if log[key]]
        for which in ("warning", "critical"):
            out[f"{key}_{which}"] = per_name(setting, key, "log", fallback,
                                             lambda t, which=which, fallback=fallback: getattr(t or fallback, which))
        out[f"{key}_left_out"] = tuple(log["name"] for log in logs if not log[key])
    return out


def rules(t: dict) -> dict:
    from monitor.fleet.kit import compare, health_runbook, level_text, num, rule

    runbook, out = health_runbook("logs"), []
    for alert, metric, key, shown, what in (
        ("LogErrorRateHigh", "monitor_log_errors_per_minute", "errors_per_minute",
         '{{ $value | printf "%.2f" }} errors/min', "errors per minute"),
        ("LogErrorRatioHigh", "monitor_log_error_ratio", "error_ratio",
         "{{ $value | humanizePercentage }} of its records", "error ratio"),
    ):
        for severity, for_ in (("warning", "10m"), ("critical", "5m")):
            levels = t[f"{key}_{severity}"]
            out.append(rule(alert, compare(metric, ">=", levels, skip=t[f"{key}_left_out"]), for_, severity,
                            f"Log {{{{ $labels.log }}}}: {what} high ({severity})",
                            f"Log {{{{ $labels.log }}}} on {{{{ $labels.instance }}}} logged {shown} since the "
                            f"previous health run ({severity} from {level_text(levels, num)}).", runbook))
    return {"monitor_logs": out}


def panels(t: dict) -> list:
    from monitor.fleet.kit import INSTANCE as I, panel, steps, target

    row, legend = "Scraper Performance", "{{instance}} {{log}}"
    rate = t["errors_per_minute_warning"].default, t["errors_per_minute_critical"].default
    ratio = t["error_ratio_warning"].default, t["error_ratio_critical"].default
    return [
        (row, panel("timeseries", "Log errors per minute", [target(f"monitor_log_errors_per_minute{{{I}}}", legend)],
                    "ERROR/CRITICAL records per minute appended since the previous run (logfiles "
                    "errors_per_minute).", "none", steps("green", (rate[0], "yellow"), (rate[1], "red")), 0), 6, 8),
        (row, panel("timeseries", "Log error ratio", [target(f"monitor_log_error_ratio{{{I}}}", legend)],
                    "Error records / all records appended since the previous run (logfiles error_ratio).",
                    "percentunit", steps("green", (ratio[0], "yellow"), (ratio[1], "red")), 0, 1), 6, 8),
    ]
