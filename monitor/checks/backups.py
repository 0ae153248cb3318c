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
            for _member in archive:
                count += 1
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
    """Check the CRC of every member (zipfile streams each one)."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.infolist()
            for info in names:
                if clock() > deadline:
                    raise VerifyTimeout()
                with archive.open(info) as member:
                    while member.read(CHUNK):
                        if clock() > deadline:
                            raise VerifyTimeout()
    except zipfile.BadZipFile as exc:
        raise VerifyError(f"bad zip archive: {exc}") from None
    except (EOFError, zlib.error) as exc:
        raise VerifyError(f"truncated or corrupt zip archive: {exc}") from None
    return f"zip ok ({len(names)} members, CRC checked)"


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
