"""The `cron` check (kind `system`): did the other jobs run on schedule?

Each command touches `state/<command>.lock` when it starts, so the lock's mtime is
when it last ran: no extra write on any run. A job is judged only when its config
section exists or it ran before. A job that never ran is missed only once its first
scheduled time (`Job.cron` in `jobs.JOBS`, as `monitor cron` prints it, local time)
plus its grace has passed since monitor's first run on this state folder, kept as
`first_run` in what health carries (`state/counters.json`): a fresh install pages
nothing before cron had a chance to run the job.
"""

import os
import time
from datetime import datetime, timedelta
from functools import partial

from monitor.jobs import JOBS
from monitor.results import OK, WARNING, Result, is_number
from monitor.runner import Check
from monitor.units import format_duration

# The jobs judged here, with their schedules (`jobs.JOBS`, as `monitor cron` prints
# them): health runs this check, the dead man's switch watches it.
WATCHED = tuple(job for job in JOBS.values() if job.grace is not None)


def _max_gap(hours, grace) -> float:
    """The longest normal gap between two runs: the step between scheduled hours plus the grace."""
    steps = [(b - a) % 24 or 24 for a, b in zip(hours, hours[1:] + hours[:1])]
    return max(steps) * 3600 + grace


def next_scheduled(after: float, hours) -> float:
    """The first time strictly after `after` when cron fires at minute 0 of one of `hours`."""
    start = datetime.fromtimestamp(after).replace(minute=0, second=0, microsecond=0)  # naive local
    for step in range(0, 50):
        candidate = start + timedelta(hours=step)
        if candidate.hour in hours and candidate.timestamp() > after:
            return candidate.timestamp()
    return after + 86400  # not reached: every hour of two days was tried


def first_run(carried, folder: str, now: float) -> float:
    """When monitor first ran on this state folder; 0 when it is older than the mark.

    Saved once (`first_run` in the carried counters). Without the mark, a state folder
    whose counters hold an earlier health run's samples (or were set aside as corrupt)
    is an install from before the mark: 0, judged as before. Otherwise this is a fresh
    install: now, or when another command first locked the folder if it ran before.
    """
    saved = carried.previous.get("first_run") if carried is not None else None
    if is_number(saved):
        return min(saved, now)  # a clock set back: not in the future
    if carried is None:  # nowhere to keep the mark: judged as before
        return 0.0
    try:
        names = os.listdir(folder)
    except OSError:
        names = []
    corrupt = f"{JOBS['health'].carried_file}.corrupt-"
    if carried.previous.get("cpu") or carried.previous.get("net") \
            or any(name.startswith(corrupt) for name in names):
        mark = 0.0
    else:
        locks = []
        for job in WATCHED:
            try:
                locks.append(os.lstat(os.path.join(folder, f"{job.lock}.lock")).st_mtime)
            except OSError:
                pass
        mark = min([now, *locks])
    carried.save("first_run", mark)
    return mark


def _local(ts: float) -> datetime:
    return datetime.fromtimestamp(ts).astimezone()


def cron(config: dict, carried=None, now=time.time) -> Result:
    folder = config["paths"]["state"]
    current = now()
    since = first_run(carried, folder, current)
    details, late, waiting = {}, [], []
    for watched in WATCHED:
        job, hours, grace = watched.name, watched.hours, watched.grace
        max_gap = _max_gap(hours, grace)
        try:
            last = os.lstat(os.path.join(folder, f"{watched.lock}.lock")).st_mtime
        except OSError:
            last = None
        if last is None and not watched.configured(config):
            continue
        if last is None:
            due = next_scheduled(since, hours) if since > 0 else 0.0
            details[job] = {"last_run": None, "max_gap_seconds": max_gap}
            if current >= due + grace:
                late.append(f"{job} never ran")
            else:
                details[job]["first_due"] = _local(due).isoformat(timespec="seconds")
                waiting.append(f"{job} first due {_local(due):%a %H:%M}")
            continue
        age = max(0.0, current - last)
        details[job] = {"last_run": _local(last).isoformat(timespec="seconds"),
                        "age_seconds": round(age), "max_gap_seconds": max_gap}
        if age > max_gap:
            late.append(f"{job} last ran {format_duration(age)} ago")
    if late:
        return Result(WARNING, "; ".join(late) + " (is cron running it? see `monitor cron`)", details=details)
    ran = [f"{job} {format_duration(d['age_seconds'])} ago" for job, d in details.items() if "age_seconds" in d]
    parts = ([f"on schedule: {', '.join(ran)}"] if ran else []) + waiting
    return Result(OK, "; ".join(parts) if parts else "no scheduled job configured yet", details=details)


# --- what this check exports (the contract: monitor/checks/__init__.py) -----------------------

def checks(config: dict, carried, shared=None) -> list:
    """One `cron` check: did the other jobs run on schedule?"""
    return [Check("cron", "system", partial(cron, config, carried), config["system"]["timeout"])]


def check_ids(config: dict) -> list[str]:
    return ["cron"]
