"""Alert state: which problems the operator has been told about, so each is told once.

Pure logic over a dict of entries keyed by check id (the file handling is in
`notify.py`). Per check: status, since (when the problem began), consecutive non-ok
count, last notified status and time, and the command and kind that produced it.

Transitions (SPEC: Alerts): the first alert after `alert_after` consecutive non-ok
runs; another when the severity changes; a reminder every `repeat_interval` while
critical (6x that for warning/unknown); RESOLVED with the duration when it is ok again
and the operator had been told. `unknown` alerts like a warning ("could not check").

Flapping (`alerts.flap_window`, Nagios flap detection made simple): a "fire" is the
run where a problem reaches `alert_after` consecutive non-ok runs, a "resolve" the ok
run that ends such a problem. Changes less than a window apart form a chain (kept as
`changed_at`, `chain_since`, `changes`, `refires`); on the third resolve→fire of a
chain the check is flapping: one FLAPPING alert instead of that fire, then nothing
for the check (no alert, reminder, severity change nor RESOLVED) until it has stayed
ok, or stayed non-ok, for a whole window. Then, ok: one RESOLVED for the whole
episode; non-ok: the usual alert at its current severity, "was flapping" (so a
critical is told at most one window late, never lost).

Acknowledged (`/ack` or the Ack button in Telegram, `acknowledge`): an entry's `ack`
({by, at, status}) stops the reminders while the check keeps the acked severity; a
severity change or ok ends it, and the alert or RESOLVED is told as usual. Non-ok
entries keep the check's message (`message`, clipped) for `/status`.
"""

from typing import NamedTuple

from monitor.results import OK, UNKNOWN, WARNING, is_number
from monitor.text import clip

RESOLVED = "resolved"
FLAPPING = "flapping"
FLAP_REFIRES = 3  # resolve→fire cycles in one chain that make a check flapping
STATE_VERSION = 1  # the flapping fields are optional: older alerts.json files load as they are
MESSAGE_CHARS = 200  # a non-ok check's message kept for /status


class Alert(NamedTuple):
    check_id: str
    status: str            # critical | warning | unknown | resolved | flapping
    result: object         # the Result that triggered it
    since: float           # when the problem began (epoch seconds)
    now: float
    reminder: bool = False
    previous: str | None = None  # the status last notified, on a severity change or RESOLVED
    changes: int = 0       # FLAPPING: the state changes counted since `since`
    flap_window: float = 0.0  # FLAPPING: how long it must stay one way before alerts resume

    @property
    def duration(self) -> float:
        return max(0.0, self.now - self.since)


def evaluate(entries: dict, results, command: str, kinds_run: set[str] | None, now: float,
             alert_after: int, repeat_interval: float, send_resolved: bool, flap_window: float = 0.0):
    """Given the stored entries and this run's results, return (alerts, new entries).

    Entries of checks this command no longer runs (removed from the config) are
    dropped without a RESOLVED; entries of other commands are kept as they are.
    A `flap_window` of 0 turns flap detection off.
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
        else:
            problem_began = prev_status == OK or "since" not in prev
            entry.update(since=now if problem_began else _num(prev.get("since"), now),
                         count=1 if problem_began else int(_num(prev.get("count"), 0)) + 1,
                         message=clip(r.message or "", MESSAGE_CHARS))
            ack = prev.get("ack")
            if isinstance(ack, dict) and ack.get("status") == r.status == prev_status:
                entry["ack"] = ack  # acked at this severity: it holds until the severity changes
        was_flapping = _flap(prev, entry, r.status, now, alert_after, flap_window)
        if entry.get("flapping") is not None:
            # Flapping: one FLAPPING alert (offered again until told), then nothing.
            entry["began"] = prev.get("began") if was_flapping else entry["chain_since"]
            if notified != FLAPPING:
                alerts.append(Alert(r.id, FLAPPING, r, _num(entry["began"], now), now,
                                    changes=entry["changes"], flap_window=flap_window))
        elif r.status == OK:
            if notified and notified != RESOLVED:
                if send_resolved:
                    # A silence or --no-notify can hold the RESOLVED back for some runs: keep
                    # when the problem began, so the duration told is still how long it lasted.
                    # After flapping, it began when the flapping did.
                    entry["began"] = (prev.get("began") if was_flapping or prev_status == OK
                                      else prev.get("since"))
                    alerts.append(Alert(r.id, RESOLVED, r, _num(entry["began"], now), _num(entry["since"], now),
                                        previous=notified))
                else:
                    entry["notified_status"] = None
        else:
            since, count = entry["since"], entry["count"]
            if count >= alert_after:
                every = repeat_interval if r.status not in (WARNING, UNKNOWN) else 6 * repeat_interval
                if notified in (None, RESOLVED) or notified != r.status:
                    alerts.append(Alert(r.id, r.status, r, since, now,
                                        previous=notified if notified not in (None, RESOLVED) else None))
                elif now - _num(prev.get("notified_at"), 0) >= every and "ack" not in entry:  # unreadable time: remind
                    alerts.append(Alert(r.id, r.status, r, since, now, reminder=True))
        new[r.id] = entry
    for check_id, entry in entries.items():
        if check_id in seen or not isinstance(entry, dict):
            continue
        gone = entry.get("command") == command and (kinds_run is None or entry.get("kind") in kinds_run)
        if not gone:
            new[check_id] = entry
    return alerts, new


def _flap(prev: dict, entry: dict, status: str, now: float, alert_after: int, window: float) -> bool:
    """Carry the chain of state changes into `entry`, entering or leaving flapping.

    Return whether the check was flapping before this run.
    """
    was_flapping = is_number(prev.get("flapping"))
    if window <= 0:
        return was_flapping  # flap detection off: a flapping check alerts as usual again
    changed_at = prev.get("changed_at") if is_number(prev.get("changed_at")) else None
    if changed_at is not None and changed_at > now:
        changed_at = now  # the clock went back (a restored state folder): count from now
    chain = {"changed_at": changed_at, "chain_since": prev.get("chain_since"),
             "changes": int(_num(prev.get("changes"), 0)), "refires": int(_num(prev.get("refires"), 0)),
             "flapping": prev.get("flapping") if was_flapping else None}
    prev_count = int(_num(prev.get("count"), 0))
    fired = status != OK and entry["count"] == alert_after
    resolved = status == OK and prev.get("status", OK) != OK and prev_count >= alert_after
    if fired or resolved:
        if changed_at is None or now - changed_at >= window or not is_number(chain["chain_since"]):
            chain.update(chain_since=now, changes=1, refires=0)  # a state held a whole window: new chain
        else:
            chain.update(changes=chain["changes"] + 1, refires=chain["refires"] + fired)
        chain["changed_at"] = now
        if fired and chain["refires"] >= FLAP_REFIRES and chain["flapping"] is None:
            chain["flapping"] = now
    elif chain["flapping"] is not None and changed_at is not None and now - changed_at >= window:
        # No change for a whole window: settled, unless a new problem is still below alert_after.
        if status == OK or entry["count"] >= alert_after:
            chain.update(flapping=None, chain_since=None, changes=0, refires=0)
    if chain["changed_at"] is not None:  # a check that never fired keeps a small entry
        entry.update((k, v) for k, v in chain.items() if v is not None)
    return was_flapping


def mark_notified(entries: dict, alerts, now: float) -> None:
    """Record that these alerts reached Telegram (or its outbox) at `now`."""
    for alert in alerts:
        entry = entries.get(alert.check_id)
        if entry is None:
            continue
        entry["notified_status"] = None if alert.status == RESOLVED else alert.status
        entry["notified_at"] = now


def acknowledge(entries: dict, check_id: str, who: str, now: float) -> str | None:
    """Mark the alert of `check_id` acknowledged by `who`; return why not, or None when done.

    Acking twice keeps the first ack (who acked first, and when).
    """
    entry = entries.get(check_id)
    if not isinstance(entry, dict):
        return "no such check"
    status = entry.get("status")
    if status in (None, OK):
        return "it is ok: nothing to acknowledge"
    if not (isinstance(entry.get("ack"), dict) and entry["ack"].get("status") == status):
        entry["ack"] = {"by": who, "at": now, "status": status}
    return None


def _num(value, default: float) -> float:
    return value if is_number(value) else default

