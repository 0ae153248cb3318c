"""The `cron` check (kind `system`): did the other jobs run on schedule?

Each command touches `state/<command>.lock` when it starts, so the lock's mtime is
when it last ran: no extra write on any run. A job is judged only when its config
section exists or it ran before, so a fresh install is ok.
"""

import os
import time
from datetime import datetime

from monitor.results import OK, WARNING, Result
from monitor.units import format_duration

GRACE = 30 * 60
# Job -> (longest normal gap between runs, does the config ask for it?)
SCHEDULE = {
    "backup-check": (6 * 3600 + GRACE, lambda config: bool(config["backups"])),
    "daily-report": (25 * 3600, lambda config: bool(config.get("report"))),
}


def cron(config: dict, now=time.time) -> Result:
    folder = config["paths"]["state"]
    details, late = {}, []
    for job, (max_gap, configured) in SCHEDULE.items():
        try:
            last = os.stat(os.path.join(folder, f"{job}.lock")).st_mtime
        except OSError:
            last = None
        if last is None and not configured(config):
            continue
        if last is None:
            details[job] = {"last_run": None, "max_gap_seconds": max_gap}
            late.append(f"{job} never ran")
            continue
        age = max(0.0, now() - last)
        details[job] = {"last_run": datetime.fromtimestamp(last).astimezone().isoformat(timespec="seconds"),
                        "age_seconds": round(age), "max_gap_seconds": max_gap}
        if age > max_gap:
            late.append(f"{job} last ran {format_duration(age)} ago")
    if late:
        return Result(WARNING, "; ".join(late) + " (is cron running it? see `monitor cron`)", details=details)
    ran = ", ".join(f"{job} {format_duration(d['age_seconds'])} ago" for job, d in details.items())
    return Result(OK, f"on schedule: {ran}" if ran else "no scheduled job configured yet", details=details)
