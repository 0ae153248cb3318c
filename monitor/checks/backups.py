"""Backup checks (kind `backup`): is the newest dump there, fresh, whole and not shrinking?

`backup(cfg, cache)` lists the files matching the set's glob, judges the newest
(age, size, shrink against the one before, retention count, free space where they
live) and verifies it by streaming: constant memory whatever the size, a deadline
checked between chunks, and a cache keyed by (path, size, mtime) so an unchanged
50 GB dump is read once, not every 6 hours.
"""

import glob
import os
import stat
import time
from datetime import datetime
from functools import partial

from monitor.checks import MARGIN_SECONDS
from monitor.checks.archives import VERIFIERS, VerifyError, VerifyTimeout
from monitor.results import CRITICAL, OK, UNKNOWN, WARNING, Result, worst
from monitor.runner import Check
from monitor.units import format_duration, format_size

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




def backup(cfg: dict, cache, now=time.time, clock=time.monotonic, statvfs=os.statvfs) -> Result:
    """Judge one backup set; `cache` is the job's `state.Carried` (previous/save): verify results."""
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


def checks(config: dict, cache, shared=None) -> list:
    """One check per [[backups]] set, run at once; `cache`: the verifications already done."""
    return [Check(f"backup:{cfg['name']}", "backup", partial(backup, cfg, cache), cfg["timeout"] + MARGIN_SECONDS)
            for cfg in config["backups"]]


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
