"""Backup checks (kind `backup`): is the newest dump there, fresh, whole and not shrinking?

`backup(cfg, cache)` lists the files matching the set's glob, judges the newest
(age, size, shrink against the one before, retention count, free space where they
live) and verifies it by streaming: constant memory whatever the size, a deadline
checked between chunks, and a cache keyed by (path, size, mtime) so an unchanged
50 GB dump is read once, not every 6 hours.
"""

import glob
import hashlib
import os
import stat
import struct
import time
import zlib

from monitor.results import CRITICAL, OK, UNKNOWN, WARNING, Result, worst
from monitor.units import format_duration, format_size

CHUNK = 1 << 20          # read size
MAX_INFLATE = 4 << 20    # bound on decompressed bytes held at once (a zip bomb stays small)


class VerifyError(Exception):
    """The file is damaged: truncated, CRC error, digest mismatch, missing sidecar."""


class VerifyTimeout(Exception):
    pass


def _reader(path: str, deadline: float, clock=time.monotonic):
    """Yield the file's bytes in CHUNK pieces, raising VerifyTimeout past the deadline."""
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as handle:
        while True:
            if clock() > deadline:
                raise VerifyTimeout()
            n = handle.readinto(buffer)
            if not n:
                return
            yield view[:n]


def verify_gzip(path: str, deadline: float, clock=time.monotonic) -> str:
    """Decompress every gzip member to the end; zlib checks each member's CRC32 and length."""
    inflater = zlib.decompressobj(wbits=31)
    members, started = 1, False
    for chunk in _reader(path, deadline, clock):
        data = bytes(chunk)
        while data:
            started = True
            if inflater.eof:
                # A finished decompressor keeps appending what it is fed to unused_data:
                # zero padding (tape blocks) is skipped here so memory stays bounded.
                if not data.strip(b"\0"):
                    break
                inflater = zlib.decompressobj(wbits=31)  # another member follows (concatenated gzip)
                members += 1
            try:
                inflater.decompress(data, MAX_INFLATE)
                while inflater.unconsumed_tail:
                    inflater.decompress(inflater.unconsumed_tail, MAX_INFLATE)
            except zlib.error as exc:
                raise VerifyError(f"corrupt gzip data ({_zlib_reason(exc)})") from None
            data = inflater.unused_data if inflater.eof else b""
    if not started:
        raise VerifyError("empty file, not gzip data")
    if not inflater.eof:
        raise VerifyError("truncated gzip file (ends before the end of the stream)")
    return f"gzip ok ({members} member{'s' if members > 1 else ''}, CRC checked)"


def _zlib_reason(exc) -> str:
    text = str(exc)
    if "incorrect data check" in text or "incorrect length check" in text:
        return "CRC error"
    if "incorrect header check" in text:
        return "not gzip data"
    return text.replace("Error -3 while decompressing data: ", "")


def verify_tar(path: str, deadline: float, clock=time.monotonic) -> str:
    """Read every member header and skip through its data to the end (any compression)."""
    import tarfile

    class Deadline:  # tarfile reads from a file object; check the clock on every read
        def __init__(self, handle):
            self.handle = handle

        def read(self, size=-1):
            if clock() > deadline:
                raise VerifyTimeout()
            return self.handle.read(size)

    stop = []  # why tarfile stopped reading headers

    class Header(tarfile.TarInfo):
        # tarfile ends the listing quietly on a header it cannot read past the first
        # (a file cut before a header, a damaged header): only zero blocks are an end.
        @classmethod
        def fromtarfile(cls, archive):
            try:
                return super().fromtarfile(archive)
            except tarfile.HeaderError as exc:
                stop.append(exc)
                raise

    count = 0
    try:
        with open(path, "rb") as raw, tarfile.open(fileobj=Deadline(raw), mode="r|*", tarinfo=Header) as archive:
            while archive.next() is not None:
                count += 1
                archive.members.clear()  # tarfile keeps every header read: 1M entries, 500 MB
    except VerifyTimeout:
        raise
    except OSError as exc:
        if exc.errno is not None:  # a real I/O error (EIO, the file vanished): not a verdict
            raise
        raise VerifyError(f"corrupt tar archive: {exc}") from None
    except Exception as exc:  # tarfile, zlib, lzma and bz2 each raise their own on damage
        raise VerifyError(f"truncated or corrupt tar archive: {exc or type(exc).__name__}") from None
    if not count:
        raise VerifyError("tar archive has no members")
    if stop and not isinstance(stop[-1], tarfile.EOFHeaderError):
        what = "damaged header" if isinstance(stop[-1], tarfile.InvalidHeaderError) else "end of file"
        raise VerifyError(f"truncated or corrupt tar archive: {what} after {count} members, "
                          "before the end-of-archive blocks")
    return f"tar ok ({count} members read)"


def verify_zip(path: str, deadline: float, clock=time.monotonic) -> str:
    """Check the CRC and size of every member, streaming the central directory.

    zipfile.ZipFile builds an object per entry before reading any (540 MB for a
    1M-entry archive): here one central directory record is read at a time from
    its own handle, its member inflated in bounded pieces from another, so memory
    stays flat whatever the number of entries.
    """
    import zipfile

    try:
        with open(path, "rb") as directory, open(path, "rb") as members:
            try:
                end = zipfile._EndRecData(directory)
            except OSError:  # a seek before the start: shorter than an end record
                end = None
            if not end:
                raise VerifyError("bad zip archive: File is not a zip file")
            size_cd, offset_cd = end[zipfile._ECD_SIZE], end[zipfile._ECD_OFFSET]
            concat = end[zipfile._ECD_LOCATION] - size_cd - offset_cd  # bytes prepended (sfx)
            if end[zipfile._ECD_SIGNATURE] == zipfile.stringEndArchive64:
                concat -= zipfile.sizeEndCentDir64 + zipfile.sizeEndCentDir64Locator
            if concat < 0 or offset_cd < 0:
                raise VerifyError("bad zip archive: central directory offset is wrong")
            directory.seek(offset_cd + concat)
            count, done = 0, 0
            while done < size_cd:
                if clock() > deadline:
                    raise VerifyTimeout()
                entry = _zip_entry(directory)
                done += entry.pop("record_size")
                _verify_zip_member(members, entry, concat, deadline, clock)
                count += 1
    except (VerifyError, VerifyTimeout):
        raise
    except OSError as exc:
        if exc.errno is not None:  # a real I/O error (EIO, the file vanished): not a verdict
            raise
        raise VerifyError(f"truncated or corrupt zip archive: {exc}") from None
    except Exception as exc:  # struct, zlib, bz2 and lzma each raise their own on damage
        raise VerifyError(f"truncated or corrupt zip archive: {exc or type(exc).__name__}") from None
    return f"zip ok ({count} members, CRC checked)"


def _zip_entry(directory) -> dict:
    """Read the next central directory record: name, method, flags, CRC, sizes, offset."""
    import zipfile

    fixed = directory.read(zipfile.sizeCentralDir)
    if len(fixed) != zipfile.sizeCentralDir:
        raise VerifyError("bad zip archive: truncated central directory")
    rec = struct.unpack(zipfile.structCentralDir, fixed)
    if rec[zipfile._CD_SIGNATURE] != zipfile.stringCentralDir:
        raise VerifyError("bad zip archive: Bad magic number for central directory")
    lengths = (rec[zipfile._CD_FILENAME_LENGTH], rec[zipfile._CD_EXTRA_FIELD_LENGTH],
               rec[zipfile._CD_COMMENT_LENGTH])
    rest = directory.read(sum(lengths))
    if len(rest) != sum(lengths):
        raise VerifyError("bad zip archive: truncated central directory")
    flags = rec[zipfile._CD_FLAG_BITS]
    raw_name = rest[:lengths[0]]
    name = raw_name.decode("utf-8" if flags & 0x800 else "cp437", "replace")
    entry = {"name": name, "flags": flags, "method": rec[zipfile._CD_COMPRESS_TYPE],
             "crc": rec[zipfile._CD_CRC], "compress_size": rec[zipfile._CD_COMPRESSED_SIZE],
             "file_size": rec[zipfile._CD_UNCOMPRESSED_SIZE], "offset": rec[zipfile._CD_LOCAL_HEADER_OFFSET],
             "record_size": zipfile.sizeCentralDir + sum(lengths)}
    extra = rest[lengths[0]:lengths[0] + lengths[1]]
    while len(extra) >= 4:  # ZIP64: the 32-bit fields that are all ones live in extra field 1
        kind, size = struct.unpack("<HH", extra[:4])
        if kind == 1:
            values = iter(struct.unpack(f"<{size // 8}Q", extra[4:4 + size - size % 8]))
            for key in ("file_size", "compress_size", "offset"):
                if entry[key] == 0xFFFFFFFF:
                    entry[key] = next(values, entry[key])
            break
        extra = extra[4 + size:]
    return entry


def _verify_zip_member(handle, entry: dict, concat: int, deadline: float, clock) -> None:
    """Inflate one member in bounded pieces; its CRC and size must match the directory."""
    import zipfile

    name = entry["name"]
    handle.seek(entry["offset"] + concat)
    fixed = handle.read(zipfile.sizeFileHeader)
    if len(fixed) != zipfile.sizeFileHeader:
        raise VerifyError(f"truncated or corrupt zip archive: {name!r} ends before its header")
    local = struct.unpack(zipfile.structFileHeader, fixed)
    if local[zipfile._FH_SIGNATURE] != zipfile.stringFileHeader:
        raise VerifyError(f"bad zip archive: Bad magic number for file header of {name!r}")
    if entry["flags"] & 0x1:
        raise VerifyError(f"{name!r} is encrypted: its CRC cannot be checked")
    handle.seek(local[zipfile._FH_FILENAME_LENGTH] + local[zipfile._FH_EXTRA_FIELD_LENGTH], os.SEEK_CUR)
    produced, crc = 0, 0
    for out in _zip_inflate(handle, entry["method"], entry["compress_size"], name, deadline, clock):
        produced += len(out)
        if produced > entry["file_size"]:  # a bomb stops here, not when memory runs out
            raise VerifyError(f"Bad CRC-32 for file {name!r} (more data than its size)")
        crc = zlib.crc32(out, crc)
    if produced != entry["file_size"] or crc != entry["crc"]:
        raise VerifyError(f"Bad CRC-32 for file {name!r}")


def _zip_inflate(handle, method: int, left: int, name: str, deadline: float, clock):
    """Yield a member's data in pieces of at most MAX_INFLATE bytes."""
    import zipfile

    def compressed(size):
        nonlocal left
        size = min(size, left)
        data = handle.read(size)
        if len(data) != size:
            raise VerifyError(f"truncated or corrupt zip archive: {name!r} ends early")
        left -= size
        return data

    def pieces():
        while left:
            if clock() > deadline:
                raise VerifyTimeout()
            yield compressed(CHUNK)

    if method == zipfile.ZIP_STORED:
        yield from pieces()
        return
    if method == zipfile.ZIP_DEFLATED:
        inflater = zlib.decompressobj(-15)
        for data in pieces():
            while data:
                yield inflater.decompress(data, MAX_INFLATE)
                data = inflater.unconsumed_tail
                if clock() > deadline:
                    raise VerifyTimeout()
        yield inflater.flush()
        done = inflater.eof
    elif method in (zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA):
        if method == zipfile.ZIP_BZIP2:
            import bz2

            inflater = bz2.BZ2Decompressor()
        else:
            import lzma

            head = compressed(4)  # version (2 bytes), properties size (2), properties
            if len(head) != 4:
                raise VerifyError(f"truncated or corrupt zip archive: {name!r} ends early")
            props = compressed(struct.unpack("<H", head[2:])[0])
            inflater = lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=[
                lzma._decode_filter_properties(lzma.FILTER_LZMA1, props)])
        for data in pieces():
            yield inflater.decompress(data, MAX_INFLATE)
            while not inflater.needs_input and not inflater.eof:
                if clock() > deadline:
                    raise VerifyTimeout()
                yield inflater.decompress(b"", MAX_INFLATE)
            if inflater.eof:
                break
        done = inflater.eof
    else:
        raise VerifyError(f"{name!r} uses compression method {method}, which cannot be checked")
    if not done:
        raise VerifyError(f"truncated or corrupt zip archive: {name!r} ends before its compressed stream")


def verify_sha256(path: str, deadline: float, clock=time.monotonic) -> str:
    """Compare the file's SHA-256 with FILE.sha256 beside it (sha256sum format)."""
    sidecar = path + ".sha256"
    name = os.path.basename(sidecar)
    try:
        # O_NONBLOCK: opening a FIFO named like the sidecar must not wait for a writer.
        fd = os.open(sidecar, os.O_RDONLY | os.O_NONBLOCK)
        with open(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise VerifyError(f"sidecar {name} is not a regular file")
            expected = handle.read(4096).split()[0].decode("ascii").lower()
    except FileNotFoundError:
        raise VerifyError(f"sidecar {name} is missing") from None
    except (IndexError, UnicodeDecodeError):
        raise VerifyError(f"sidecar {name} holds no digest") from None
    except OSError as exc:
        raise VerifyError(f"sidecar {name} is unreadable: {exc.strerror}") from None
    digest = hashlib.sha256()
    for chunk in _reader(path, deadline, clock):
        digest.update(chunk)
    if digest.hexdigest() != expected:
        raise VerifyError(f"SHA-256 mismatch (file {digest.hexdigest()[:12]}…, sidecar {expected[:12]}…)")
    return "sha256 matches sidecar"


def _sidecar_stamp(path: str) -> list | None:
    try:
        st = os.stat(path + ".sha256")
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def _cache_hit(cached, stamp: list) -> bool:
    """Is `cached` a whole verdict on this very file (a hand-edited entry is not)?"""
    return (isinstance(cached, dict) and cached.get("stamp") == stamp and isinstance(cached.get("ok"), bool)
            and isinstance(cached.get("result"), str) and isinstance(cached.get("verified_at"), (int, float)))


def _file_type(mode: int) -> str:
    for test, what in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISCHR, "a character device")):
        if test(mode):
            return what
    return "not a regular file"


VERIFIERS = {"gzip": verify_gzip, "tar": verify_tar, "zip": verify_zip, "sha256": verify_sha256}


def backup(cfg: dict, cache, now=time.time, clock=time.monotonic, statvfs=os.statvfs) -> Result:
    """Judge one backup set; `cache` is a `Counters`-like store (previous/save) of verify results."""
    started = clock()
    deadline = started + cfg["timeout"]
    pattern = cfg["path"]
    files, problems, skipped = [], [], []
    for name in glob.glob(pattern):
        if cfg["verify"] == "sha256" and name.endswith(".sha256"):
            continue  # a sidecar, not a backup, even when the glob catches it
        try:
            st = os.stat(name)
        except OSError as exc:
            why = "broken symlink" if os.path.islink(name) else exc.strerror
            problems.append(f"{name}: {why}")
            continue
        if stat.S_ISREG(st.st_mode):
            files.append((st.st_mtime, name, st))
        else:  # a directory, a FIFO (reading it would hang), a socket or a device
            skipped.append(f"{name} is {_file_type(st.st_mode)}")
    if problems:
        return Result(CRITICAL, f"unreadable: {'; '.join(problems)[:300]}", details={"pattern": pattern})
    if not files:
        if skipped:
            return Result(CRITICAL, f"no regular file matches {pattern} ({'; '.join(skipped)[:300]})",
                          details={"pattern": pattern, "count": 0, "skipped": skipped})
        return Result(CRITICAL, f"no file matches {pattern}", details={"pattern": pattern, "count": 0})
    files.sort(reverse=True)
    _, newest, st = files[0]
    previous = files[1][2].st_size if len(files) > 1 else None
    age = max(0.0, now() - st.st_mtime)
    details = {"newest": newest, "age_seconds": round(age), "size_bytes": st.st_size,
               "previous_size_bytes": previous, "count": len(files)}
    if skipped:
        details["skipped"] = skipped
    verdicts = []  # (status, reason)

    if age > cfg["max_age"]:
        verdicts.append((CRITICAL, f"newest is {format_duration(age)} old (max {cfg['max_age'].text})"))
    if st.st_size == 0:
        verdicts.append((CRITICAL, "newest is empty (0 bytes)"))
    elif st.st_size < cfg["min_size"]:
        verdicts.append((CRITICAL, f"newest is {format_size(st.st_size)}, below {cfg['min_size'].text}"))
    if previous:
        shrink = 100.0 * (previous - st.st_size) / previous
        details["shrink_percent"] = round(shrink, 1)
        limit = cfg["max_shrink_percent"]
        if shrink > min(2 * limit, (100.0 + limit) / 2):  # twice the limit, or halfway to 100%
            verdicts.append((CRITICAL, f"newest shrank {shrink:.0f}% ({format_size(previous)} → {format_size(st.st_size)})"))
        elif shrink > limit:
            verdicts.append((WARNING, f"newest shrank {shrink:.0f}% ({format_size(previous)} → {format_size(st.st_size)})"))
    if len(files) < cfg["min_count"]:
        verdicts.append((WARNING, f"{len(files)} file(s), fewer than min_count {cfg['min_count']} (retention broken?)"))
    try:
        fs = statvfs(os.path.dirname(newest))
        free = 100.0 * fs.f_bavail / fs.f_blocks if fs.f_blocks else 100.0
        details["free_percent"] = round(free, 1)
        if free < cfg["min_free_percent"] / 2:
            verdicts.append((CRITICAL, f"{free:.1f}% free where the backups live"))
        elif free < cfg["min_free_percent"]:
            verdicts.append((WARNING, f"{free:.1f}% free where the backups live"))
    except OSError as exc:
        verdicts.append((UNKNOWN, f"cannot measure free space: {exc.strerror}"))

    method = cfg["verify"]
    if method != "none":
        key = f"verify:{newest}"
        stamp = [st.st_size, st.st_mtime_ns, method]
        if method == "sha256":  # a sidecar written (or fixed) after the dump must be read again
            stamp.append(_sidecar_stamp(newest))
        cached = cache.previous.get(key)
        if _cache_hit(cached, stamp):
            outcome = dict(cached, cached=True)
        else:
            try:
                outcome = {"ok": True, "result": VERIFIERS[method](newest, deadline, clock)}
            except VerifyError as exc:
                outcome = {"ok": False, "result": str(exc)}
            except VerifyTimeout:
                outcome = {"ok": None, "result": f"verification unfinished after {cfg['timeout'].text}"}
            except OSError as exc:
                outcome = {"ok": None, "result": f"cannot read {newest}: {exc.strerror}"}
                verdicts.append((CRITICAL, f"unreadable: {exc.strerror}"))
            outcome.update(stamp=stamp, verified_at=now(), cached=False)
        if outcome["ok"] is not None:  # a timeout is not a verdict worth remembering
            cache.save(key, {k: v for k, v in outcome.items() if k != "cached"})
        from datetime import datetime

        details["verify"] = {"method": method, "ok": outcome["ok"], "result": outcome["result"],
                             "verified_at": datetime.fromtimestamp(outcome["verified_at"]).astimezone()
                             .isoformat(timespec="seconds"), "cached": outcome.get("cached", False)}
        if outcome["ok"] is False:
            verdicts.append((CRITICAL, f"verification failed: {outcome['result']}"))
        elif outcome["ok"] is None and not any(v[1].startswith("unreadable") for v in verdicts):
            verdicts.append((UNKNOWN, outcome["result"]))

    status = worst(*(v[0] for v in verdicts)) if verdicts else OK
    reasons = "; ".join(v[1] for v in sorted(verdicts, key=lambda v: v[0] != status))
    summary = f"{os.path.basename(newest)}, {format_size(st.st_size)}, {format_duration(age)} old"
    message = f"{reasons} ({summary})" if reasons else f"ok: {summary}" + (
        f", {details['verify']['result']}" if "verify" in details else "")
    return Result(status, message, value=round(age), unit="s", warning=None, critical=cfg["max_age"],
                  details=details)


# --- what these checks export (the contract: monitor/checks/__init__.py) ----------------------

METRICS = {
    "monitor_backup_age_seconds": ("Age of the newest file of the backup set.", ("backup",)),
    "monitor_backup_size_bytes": ("Size of the newest file of the backup set.", ("backup",)),
}
MEASURES = {"backup": ("age", False)}


def _age_now(age: str, narrow: str = "") -> str:
    """PromQL of a backup's age now: `age` at the last backup-check plus the time since.

    The textfile holds the age at the last run (every 6 hours); adding the time since shows
    a backup going stale between runs at once. `narrow` picks the runs ('instance=~"$instance",').
    """
    return (f"{age} + on(instance, job) group_left() "
            f'(time() - monitor_last_run_timestamp_seconds{{{narrow}command="backup-check"}})')


def check_ids(config: dict) -> list[str]:
    return [f"backup:{b['name']}" for b in config["backups"]]


def samples(result) -> list:
    name, details = result.id.split(":", 1)[1], result.details or {}
    return [("monitor_backup_age_seconds", {"backup": name}, details.get("age_seconds")),
            ("monitor_backup_size_bytes", {"backup": name}, details.get("size_bytes"))]


def levels(config: dict) -> dict:
    from monitor.fleet.kit import per_name, schema_default

    return {"backup_max_age": per_name(config["backups"], "max_age", "backup", schema_default("backups", "max_age"))}


def rules(t: dict) -> dict:
    from monitor.fleet.kit import HOST, compare, duration_text, level_text, rule

    runbook, max_age = f"ssh {HOST} monitor backup-check --format text", t["backup_max_age"]
    return {"monitor_services": [
        rule("BackupStale", compare("monitor_backup_age_seconds", ">", max_age, _age_now),
             "5m", "critical", "Backup {{ $labels.backup }} is stale",
             "The newest file of backup {{ $labels.backup }} on {{ $labels.instance }} is "
             f"{{{{ $value | humanizeDuration }}}} old (max_age {level_text(max_age, duration_text)}).", runbook),
        rule("BackupFailed", 'monitor_check_status{kind="backup"} == 2', "1m", "critical",
             "Backup check {{ $labels.check }} failed",
             "backup-check judged {{ $labels.check }} critical on {{ $labels.instance }} (status {{ $value }}): "
             "missing, empty, shrunk, unreadable or failed verification.", runbook),
    ]}


def panels(t: dict) -> list:
    from monitor.fleet.kit import INSTANCE as I, panel, steps, target

    age_now = _age_now(f"monitor_backup_age_seconds{{{I}}}", f"{I},")  # as BackupStale computes it
    return [("Monitor", panel("timeseries", "Backup age", [target(age_now, "{{instance}} {{backup}}")],
                              "Age of the newest file of each backup set (backups max_age).", "s",
                              steps("green", (t["backup_max_age"].default, "red")), 0), 24, 8)]
