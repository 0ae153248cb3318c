"""Alert state: which problems the operator has been told about, so each is told once.

Pure logic over a dict of entries keyed by check id (the file handling is in
`notify.py`). Per check: status, since (when the problem began), consecutive non-ok
count, last notified status and time, and the command and kind that produced it.

Transitions (SPEC: Alerts): the first alert after `alert_after` consecutive non-ok
runs; another when the severity changes; a reminder every `repeat_interval` while
critical (6x that for warning/unknown); RESOLVED with the duration when it is ok again
and the operator had been told. `unknown` alerts like a warning ("could not check").
"""

from typing import NamedTuple

from monitor.results import OK, UNKNOWN, WARNING

RESOLVED = "resolved"
STATE_VERSION = 1


class Alert(NamedTuple):
    check_id: str
    status: str            # critical | warning | unknown | resolved
    result: object         # the Result that triggered it
    since: float           # when the problem began (epoch seconds)
    now: float
    reminder: bool = False
    previous: str | None = None  # the status last notified, on a severity change or RESOLVED

    @property
    def duration(self) -> float:
        return max(0.0, self.now - self.since)


def evaluate(entries: dict, results, command: str, kinds_run: set[str] | None, now: float,
             alert_after: int, repeat_interval: float, send_resolved: bool):
    """Given the stored entries and this run's results, return (alerts, new entries).

    Entries of checks this command no longer runs (removed from the config) are
    dropped without a RESOLVED; entries of other commands are kept as they are.
    """
    new = {}
    seen = set()
    alerts = []
    for r in results:
        seen.add(r.id)
        prev = entries.get(r.id) if isinstance(entries.get(r.id), dict) else {}
        prev_status = prev.get("status", OK)
        notified = prev.get("notified_status")
        entry = {"command": command, "kind": r.kind, "status": r.status,
                 "notified_status": notified, "notified_at": prev.get("notified_at")}
        if r.status == OK:
            entry.update(since=now if prev_status != OK else prev.get("since", now), count=0)
            if notified and notified != RESOLVED:
                if send_resolved:
                    # A silence or --no-notify can hold the RESOLVED back for some runs: keep
                    # when the problem began, so the duration told is still how long it lasted.
                    entry["began"] = prev.get("since") if prev_status != OK else prev.get("began")
                    alerts.append(Alert(r.id, RESOLVED, r, _num(entry["began"], now), _num(entry["since"], now),
                                        previous=notified))
                else:
                    entry["notified_status"] = None
        else:
            problem_began = prev_status == OK or "since" not in prev
            since = now if problem_began else _num(prev.get("since"), now)
            count = 1 if problem_began else int(_num(prev.get("count"), 0)) + 1
            entry.update(since=since, count=count)
            if count >= alert_after:
                every = repeat_interval if r.status not in (WARNING, UNKNOWN) else 6 * repeat_interval
                if notified in (None, RESOLVED) or notified != r.status:
                    alerts.append(Alert(r.id, r.status, r, since, now,
                                        previous=notified if notified not in (None, RESOLVED) else None))
                elif now - _num(prev.get("notified_at"), 0) >= every:  # unreadable time: remind
                    alerts.append(Alert(r.id, r.status, r, since, now, reminder=True))
        new[r.id] = entry
    for check_id, entry in entries.items():
        if check_id in seen or not isinstance(entry, dict):
            continue
        gone = entry.get("command") == command and (kinds_run is None or entry.get("kind") in kinds_run)
        if not gone:
            new[check_id] = entry
    return alerts, new


def mark_notified(entries: dict, alerts, now: float) -> None:
    """Record that these alerts reached Telegram (or its outbox) at `now`."""
    for alert in alerts:
        entry = entries.get(alert.check_id)
        if entry is None:
            continue
        entry["notified_status"] = None if alert.status == RESOLVED else alert.status
        entry["notified_at"] = now


def _num(value, default: float) -> float:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else default
