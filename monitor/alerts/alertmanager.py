"""Alertmanager as an alert sink: a run's active alerts, posted to every replica, and
monitor's silences and acks, relayed as Alertmanager silences.

The Alertmanager HA model: a client sends every alert to every replica and the
cluster de-duplicates, groups, inhibits, silences and notifies. Each run of a
command POSTs `/api/v2/alerts` to each URL of `alertmanager.urls` with the alerts of
its checks that are active: non-ok for `alerts.alert_after` runs (or flapping after
that). An alert's `endsAt` is now + 3 x the command's schedule period, so one late
run does not resolve it; once the check is ok (or gone from the config, or its labels
changed, e.g. warning -> critical) it is posted once more with `endsAt` = now. Those
RESOLVED alerts are kept in `state/alertmanager.json` and sent again by every run
until at least one replica accepted them: a RESOLVED is never lost. What was posted
firing is kept there too, to know what to resolve.

A check silenced in monitor is still posted firing (not posting it would let
Alertmanager end it at `endsAt` and send a false RESOLVED); the silence itself is
relayed as an Alertmanager silence (matchers `alertname` =~ Monitor.+, `environment`,
`instance` and `check` =~ the glob as a regex, until the silence's end, at most a year
ahead), and so is an ack (`/ack`, the Ack button): a silence
matching that alert's labels, severity included, ending 3 periods ahead and renewed by
every run while the ack holds. A silence goes to one replica after another until one
takes it (gossip copies it to the others); its Alertmanager id is kept in the state
file, so it is expired (`DELETE /api/v2/silence/{id}`) when monitor's silence is
removed early or the ack lapses (the alert resolved or changed severity). A relay no
replica took is tried again by the next run.

`plan` and `plan_relays` decide from plain data (tests/test_alertmanager.py); `post`
reads and saves the state file (under notify.py's lock), reads the token and talks
HTTP, every replica at once, the whole step within `alertmanager.timeout`, at most
64 KB of each answer read.
"""

import json
import logging
import os
import re
import threading
import time
from datetime import datetime, timezone

from monitor import redact, state
from monitor.alerts.silences import MAX_SECONDS as MAX_SILENCE  # a relayed silence ends at most this far ahead
from monitor.results import CRITICAL, OK, UNKNOWN
from monitor.text import ID_CHARS, clip, printable

log = logging.getLogger("monitor")
STATE_FILE = "alertmanager.json"
API_PATH = "/api/v2/alerts"
SILENCES_PATH = "/api/v2/silences"  # POST: a new silence, or an update of the one whose id it names
SILENCE_PATH = "/api/v2/silence/"   # + its id: GET reads a silence, DELETE expires it
MAX_ANSWER = 64 * 1024    # Alertmanager answers with a few bytes; more is not read
MAX_PENDING = 1000        # RESOLVED alerts kept for retry; beyond, the oldest go (an ERROR record)
LIFETIME_PERIODS = 3      # endsAt = now + this x the command's schedule period
HOST_CHARS = 64
MAX_RELAYS = 100          # silences and acks relayed at once; more wait (a WARNING record)
MAX_OPS = 20              # silence requests per run (one each); the others wait for the next run
_SILENCE_ID = re.compile(r"[0-9A-Za-z-]{1,64}")  # Alertmanager's are UUIDs: anything else is not kept
_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?(Z|[+-]\d\d:\d\d)")


# --- what is posted (pure) -------------------------------------------------------------------

def alertname(kind: str, check_id: str) -> str:
    """One alert name per kind of check, from the kind (MODULES) and the check id's prefix:
    disk:/ of kind system -> MonitorSystemDisk, scraper:x -> MonitorScraper,
    vault-token -> MonitorVaultToken. Alertmanager groups by it across hosts."""
    prefix = check_id.split(":", 1)[0]
    words = [w for w in prefix.replace("_", "-").split("-") if w.isalnum()] or ["check"]
    kind = kind if kind.isalnum() else "check"
    if not (words[0].startswith(kind) or kind.startswith(words[0])):
        words.insert(0, kind)
    return "Monitor" + "".join(w[:1].upper() + w[1:] for w in words)


def iso(ts: float) -> str:
    """RFC 3339 in UTC, as Alertmanager's API reads it."""
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def runbook(host: str, command: str, kind: str) -> str:
    if command == "health":
        return f"ssh {host} monitor health --only {kind} --format text"
    return f"ssh {host} monitor {command} --format text --no-notify"


def severity_label(status: str) -> str:
    """The `severity` label of a check status: critical, or warning (an unknown check alerts as one)."""
    return CRITICAL if status == CRITICAL else "warning"


def _record(result, entry: dict, command: str, host: str, environment: str) -> dict:
    """The firing alert of one non-ok result: labels, annotations, startsAt, and what it came from."""
    from monitor.alerts.messages import headline  # composes the value > threshold words

    check = clip(result.id, ID_CHARS)
    severity = severity_label(result.status)
    numbers = headline(result, result.status, result.id)
    status = "could not check" if result.status == UNKNOWN else result.status
    since = entry.get("since") if isinstance(entry.get("since"), (int, float)) else None
    return {
        "labels": {"alertname": alertname(result.kind, result.id), "check": check, "instance": host,
                   "environment": environment, "severity": severity, "command": command},
        "annotations": {"summary": f"{check} {status}" + (f" — {numbers}" if numbers else ""),
                        "description": clip(result.message or status, 600),
                        "runbook": runbook(host, command, result.kind)},
        "startsAt": iso(since) if since is not None else None,
        "kind": result.kind,
    }


def plan(stored: dict, results, entries: dict, command: str, kinds_run, host: str, environment: str,
         alert_after: int, now: float, period: float):
    """Given the stored sink state and this run's results, return (alerts to post, new state).

    `entries` is the alert state after this run (`plan.tell`). A check silenced in
    monitor is posted like any other: `plan_relays` silences it in Alertmanager. An
    alert whose labels changed is resolved under its old labels. Firing alerts of other commands, and of checks this
    run did not judge (`--only`), are kept as they are: the runs that judge them post them.
    """
    host = clip(host, HOST_CHARS)
    before = stored.get("firing") if isinstance(stored.get("firing"), dict) else {}
    # A damaged record (no labels) is dropped, as `pending`'s are: it must not cost the run's alerts.
    before = {k: v for k, v in before.items() if isinstance(v, dict) and isinstance(v.get("labels"), dict)}
    pending = [a for a in stored.get("resolved", []) if isinstance(a, dict) and isinstance(a.get("labels"), dict)]
    firing, resolved, seen = {}, [], set()
    for r in results:
        seen.add(r.id)
        entry = entries.get(r.id) if isinstance(entries.get(r.id), dict) else {}
        old = before.get(r.id) if isinstance(before.get(r.id), dict) else None
        count = entry.get("count") if isinstance(entry.get("count"), int) else 0
        if r.status != OK and count >= alert_after:
            record = _record(r, entry, command, host, environment)
            if old and old.get("labels") == record["labels"] and old.get("startsAt"):
                record["startsAt"] = old["startsAt"]  # the same alert: its start does not move
            firing[r.id] = record
        elif old and entry.get("flapping") is not None:
            firing[r.id] = old  # flapping: firing until it settles, not fired and resolved each run
        if old and (r.id not in firing or firing[r.id]["labels"] != old.get("labels")):
            resolved.append(_resolution(old, now))
    for check_id, old in before.items():
        if check_id in seen or not isinstance(old, dict):
            continue
        labels = old.get("labels") if isinstance(old.get("labels"), dict) else {}
        gone = labels.get("command") == command and (kinds_run is None or old.get("kind") in kinds_run)
        if gone:
            resolved.append(_resolution(old, now))  # removed from the config: no alert left behind
        else:
            firing[check_id] = old
    live = [record["labels"] for record in firing.values()]
    pending = [a for a in pending if a["labels"] not in live] + resolved  # fired again: not resolved
    dropped = pending[:-MAX_PENDING] if len(pending) > MAX_PENDING else []
    pending = pending[len(dropped):]
    ends = iso(now + LIFETIME_PERIODS * period)
    posts = [_payload(record, ends) for check_id, record in firing.items() if check_id in seen]  # judged now
    return posts + pending, {"firing": firing, "resolved": pending}, dropped


def _payload(record: dict, ends_at: str) -> dict:
    alert = {"labels": record["labels"], "annotations": record.get("annotations") or {}, "endsAt": ends_at}
    if record.get("startsAt"):
        alert["startsAt"] = record["startsAt"]
    return alert


def _resolution(record: dict, now: float) -> dict:
    return {**_payload(record, iso(now)), "resolvedAt": now}


def wire(alert: dict) -> dict:
    """What goes on the wire: Alertmanager refuses no field, but sends what it knows."""
    return {k: v for k, v in alert.items() if k in ("labels", "annotations", "startsAt", "endsAt")}


# --- monitor's silences and acks, as Alertmanager silences (pure) ------------------------------

def glob_regex(pattern: str) -> str:
    """The regex matching what `fnmatch.fnmatchcase` matches for the glob `pattern`, in the
    syntax Alertmanager reads (Go's RE2; it anchors a matcher's regex at both ends).

    `*` any text, `?` one character, `[...]` and `[!...]` a set (a reversed range such as
    `z-a` in it matches nothing, as in fnmatch); the regex's own characters are escaped.
    """
    out, i, n = [], 0, len(pattern)
    while i < n:
        char, i = pattern[i], i + 1
        if char == "*":
            out.append(".*")
        elif char == "?":
            out.append(".")
        elif char == "[":
            end = i + (i < n and pattern[i] == "!")
            end += end < n and pattern[end] == "]"  # a ] first in the set is itself
            end = pattern.find("]", end)
            if end < 0:
                out.append(r"\[")  # no closing ]: a plain [, as fnmatch reads it
                continue
            body, i = pattern[i:end], end + 1
            negate = body.startswith("!")
            members = _set_members(body[1:] if negate else body)
            if members:
                out.append(f"[{'^' if negate else ''}{members}]")
            else:
                out.append("." if negate else r"[^\s\S]")  # an empty set: any character, or none
        else:
            out.append("\\" + char if char in _REGEX_CHARS else char)
    # (?s): `.` matches a newline too, as fnmatch's `*` and `?` do
    return "(?s:" + "".join(out) + ")"


_REGEX_CHARS = frozenset("\\.+*?()|[]{}^$")
_SET_CHARS = frozenset("\\[]^-")


def _set_members(body: str) -> str:
    """A glob set's members as a regex class's, its ranges going up (a reversed one is dropped)."""
    out, i = [], 0
    while i < len(body):
        if i + 2 < len(body) and body[i + 1] == "-":
            low, high = body[i], body[i + 2]
            if low <= high:
                out.append(f"{_in_set(low)}-{_in_set(high)}")
            i += 3
        else:
            out.append(_in_set(body[i]))
            i += 1
    return "".join(out)


def _in_set(char: str) -> str:
    return "\\" + char if char in _SET_CHARS else char


def _matcher(name: str, value: str, regex: bool = False) -> dict:
    return {"name": name, "value": value, "isRegex": regex, "isEqual": True}


def _silence_relay(silence: dict, key: str, old, host: str, environment: str | None, now: float) -> dict:
    """The Alertmanager silence of one monitor silence: monitor's alerts (`alertname` Monitor...)
    of this environment and instance whose check matches the pattern, until the silence's end
    (at most a year ahead: older versions could save `/mute x 99999999999999d`, a year
    Alertmanager and `iso` cannot write; the year is renewed by the runs, not every run)."""
    until = float(silence["until"])
    cap = now + MAX_SILENCE
    if not until <= cap:
        kept = old.get("until") if isinstance(old, dict) else None
        far = isinstance(kept, (int, float)) and not isinstance(kept, bool) and now + MAX_SILENCE / 2 < kept <= cap
        until = kept if far else cap
    reason = clip(printable(str(silence.get("reason") or "")), 160)
    matchers = [_matcher("alertname", "Monitor.+", True)]
    if environment is not None:
        matchers.append(_matcher("environment", environment))
    matchers += [_matcher("instance", host), _matcher("check", glob_regex(clip(silence["pattern"], ID_CHARS)), True)]
    return {"matchers": matchers, "endsAt": iso(until), "until": until,
            "createdBy": clip(printable(str(silence.get("author") or "monitor")), 64),
            "comment": (f"{reason} " if reason else "") + f"(monitor silence {key[8:]})"}


def plan_relays(stored: dict, silences: list, entries: dict, firing: dict, host: str, now: float,
                period_of, environment: str | None = None) -> tuple[dict, list]:
    """Given the relays kept in state, monitor's active silences, the alert entries after
    this run and the alerts firing (`plan`'s state), return (relays, requests).

    `relays` is what the state keeps, keyed `silence:<monitor id>` or `ack:<check>`:
    the Alertmanager silence (matchers, startsAt, endsAt, createdBy, comment), its
    Alertmanager `id` once a replica took it, `expire` while its DELETE waits. A
    request is {key, method, path, body}: a new silence, an update (an ack's endsAt,
    renewed every run), or an expiry. `period_of(command)` is a command's schedule period;
    `environment` (the config's) is matched by the silences, as `alertname` =~ Monitor.+:
    another tool's alerts on the same instance are not monitor's to silence.
    """
    host = clip(host, HOST_CHARS)
    wanted, bad = {}, []
    for silence in silences:
        key = f"silence:{clip(str(silence.get('id')), 64)}"
        try:
            wanted[key] = _silence_relay(silence, key, stored.get(key), host, environment, now)
        except (TypeError, ValueError, OverflowError, OSError, KeyError, AttributeError):
            bad.append(key[8:])  # a hand-edited entry: it must not cost the other relays, nor the run
    if bad:
        log.warning("silences.json: %d silence(s) not relayed to Alertmanager, unreadable: %s", len(bad),
                    ", ".join(bad[:5]), extra={"event": "alertmanager_relays"})
    for check_id, entry in entries.items():
        ack = entry.get("ack") if isinstance(entry, dict) else None
        record = firing.get(check_id)
        if not (isinstance(ack, dict) and isinstance(record, dict) and ack.get("status") == entry.get("status")
                and record["labels"].get("severity") == severity_label(str(ack["status"]))):
            continue  # no ack, or the acked severity is not what Alertmanager has
        until = now + LIFETIME_PERIODS * period_of(entry.get("command"))
        who = clip(printable(ack.get("by") or "monitor"), 64)
        wanted[f"ack:{check_id}"] = {
            "matchers": [_matcher(name, str(value)) for name, value in sorted(record["labels"].items())],
            "endsAt": iso(until), "until": until, "createdBy": who,
            "comment": f"acknowledged in monitor by {who}: no reminders until it changes severity or resolves"}
    if len(wanted) > MAX_RELAYS:
        log.warning("%d silences and acks to relay to Alertmanager: the first %d are", len(wanted), MAX_RELAYS,
                    extra={"event": "alertmanager_relays"})
        wanted = dict(list(wanted.items())[:MAX_RELAYS])
    relays, requests = {}, []
    for key, want in wanted.items():
        old = stored.get(key) if isinstance(stored.get(key), dict) else {}
        am_id = _kept_id(old)
        same = old.get("matchers") == want["matchers"]
        relays[key] = {**want, "id": am_id, "startsAt": old.get("startsAt") if am_id and same else None}
        if am_id and same and want["endsAt"] == old.get("endsAt") and not old.get("expire"):
            continue  # held as it is (a monitor silence does not move)
        body = {k: relays[key][k] for k in ("matchers", "endsAt", "createdBy", "comment")}
        body["startsAt"] = relays[key]["startsAt"] or iso(now)
        if am_id:
            body["id"] = am_id  # an update: in place when the start is the one Alertmanager keeps
        requests.append({"key": key, "method": "POST", "path": SILENCES_PATH, "body": body})
    for key, old in stored.items():
        if key in wanted or not isinstance(old, dict) or not _kept_id(old):
            continue  # never taken (or a hand-edited id): nothing to expire
        until = old.get("until")
        if isinstance(until, (int, float)) and not isinstance(until, bool) and until > now:
            relays[key] = {**old, "expire": True}  # removed early, or the ack lapsed
            requests.append({"key": key, "method": "DELETE", "path": SILENCE_PATH + old["id"], "body": None})
        # else over: Alertmanager ended it itself
    requests.sort(key=lambda r: (r["method"] != "DELETE", "id" in (r["body"] or {})))  # expiries, then new ones
    return relays, requests[:MAX_OPS]


def _kept_id(relay: dict) -> str | None:
    """The Alertmanager id a relay kept, if it reads as one (it goes into a URL's path)."""
    found = relay.get("id")
    return found if isinstance(found, str) and _SILENCE_ID.fullmatch(found) else None


def settle(relays: dict, requests: list, outcomes: dict) -> dict:
    """The relays after the requests: an id (and start) once taken, an expired one gone; a request
    no replica took leaves its relay as it was, to be sent again by the next run."""
    relays = {key: dict(value) for key, value in relays.items()}
    for request in requests:
        key, outcome = request["key"], outcomes.get(request["key"]) or {}
        if request["method"] == "DELETE":
            if outcome.get("ok") or outcome.get("gone"):
                relays.pop(key, None)
        elif outcome.get("ok"):
            if outcome["id"] != relays[key].get("id"):
                relays[key]["startsAt"] = outcome.get("startsAt")  # a new silence: its start, if read
            relays[key]["id"] = outcome["id"]
        elif outcome.get("gone"):
            relays[key].update(id=None, startsAt=None)  # no replica knows it any more: made anew next run
    return relays


# --- reading, sending, saving ---------------------------------------------------------------

def post(config: dict, command: str, results, kinds_run, entries: dict, silences: list, host: str,
         now: float, period: float | None = None, environ=os.environ, monotonic=time.monotonic) -> dict:
    """Post this run's active alerts and the RESOLVED ones kept for retry, relay monitor's
    silences and acks; return the counts.

    Never raises for a network or state problem: each replica's failure is a WARNING
    record; the RESOLVED alerts and the relays stay in state until a replica accepts
    them; a state file that cannot be read or written is said in `state_error`, every
    replica refusing the alerts (a wrong token or path) in `notify_error`. `period`: the
    command's schedule period (default: its `jobs.Job` record's).
    """
    from monitor.jobs import JOBS

    def period_of(name):
        return JOBS[name].period if name in JOBS else 300.0

    period = period_of(command) if period is None else period
    cfg = config["alertmanager"]
    path = os.path.join(config["paths"]["state"], STATE_FILE)
    unreadable = None
    try:
        stored = state.read_json(path, default={})
    except (state.StateError, OSError) as exc:
        stored, unreadable = {}, f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}"
    alerts, updated, dropped = plan(stored, results, entries, command, kinds_run, host,
                                    config["environment"], config["alerts"]["alert_after"], now, period)
    kept = stored.get("silences") if isinstance(stored.get("silences"), dict) else {}
    relays, requests = plan_relays(kept, silences, entries, updated["firing"], host, now,
                                   lambda name: period if name == command else period_of(name),
                                   config["environment"])
    for alert in dropped:
        log.error("dropped a RESOLVED for Alertmanager never accepted (%s on %s): more than %d waiting",
                  alert["labels"].get("check"), alert["labels"].get("instance"), MAX_PENDING,
                  extra={"event": "alertmanager_dropped"})
    firing = sum(1 for a in alerts if "resolvedAt" not in a)
    summary = {"firing": firing, "resolved": len(alerts) - firing, "accepted": 0, "urls": len(cfg["urls"]),
               "pending": len(updated["resolved"])}
    if alerts or requests:
        token = read_token(cfg, environ)
        deadline = monotonic() + cfg["timeout"]
        boxes = start_relays(cfg["urls"], requests, token, cfg["timeout"], deadline, monotonic)
        if alerts:
            body = json.dumps([wire(a) for a in alerts]).encode()
            answers = send(cfg["urls"], body, token, cfg["timeout"], monotonic, deadline)
            summary["accepted"] = sum(error is None for _, error in answers)
            for url, error in answers:
                if error:
                    log.warning("alertmanager %s: %s", shown(url), error, extra={"event": "alertmanager_failed"})
            if all(error and error.startswith("HTTP 4") for _, error in answers):
                # Every replica refused (a wrong token or path): no retry mends that. The run
                # says it in `notify_error`, and on stderr, which cron mails.
                refused = (f"alertmanager: every replica refused the alerts "
                           f"({'; '.join(sorted({clip(error, 80) for _, error in answers}))}): "
                           "check alertmanager.urls and its token")
                log.error("%s", refused, extra={"event": "alertmanager_refused"})
                summary["notify_error"] = refused
            if summary["accepted"]:
                updated["resolved"] = []
            elif updated["resolved"]:
                log.warning("no Alertmanager accepted the alerts: %d RESOLVED kept in %s for the next run",
                            len(updated["resolved"]), path, extra={"event": "alertmanager_kept"})
            summary["pending"] = len(updated["resolved"])
        relays = settle(relays, requests, finish_relays(boxes, requests, deadline, monotonic))
    updated["silences"] = relays
    summary["silences"] = sum(1 for r in relays.values() if r.get("id") and not r.get("expire"))
    summary["silences_pending"] = len(relays) - summary["silences"]
    before = {"firing": stored.get("firing", {}), "resolved": stored.get("resolved", []), "silences": kept}
    # An unreadable file (a planted link, no permission) is not overwritten: it is said, and kept.
    if updated != before and not unreadable:
        try:
            state.write_json(path, updated)
        except OSError as exc:
            unreadable = f"cannot save {path}: {exc.strerror}"
            if updated["resolved"]:
                log.error("could not save %d RESOLVED for Alertmanager (%s): they are lost",
                          len(updated["resolved"]), exc.strerror, extra={"event": "alertmanager_write_error"})
    if unreadable:
        summary["state_error"] = unreadable
    return summary


def shown(url) -> str:
    """The URL fit for a log line: the template as written, userinfo and query values masked."""
    return redact.clean_url(getattr(url, "template", url))


def read_token(cfg: dict, environ=os.environ) -> str | None:
    """The bearer token from `token_env`, else `token_file` (read as Vault's token files are)."""
    from monitor.vault_secrets import read_token as read_secret

    token, warnings = read_secret(cfg, environ, section="alertmanager")
    for warning in warnings:  # exposure (chmod 600), or no token: posted without one
        log.log(logging.WARNING if token else logging.ERROR, "%s%s", warning,
                "" if token else "; posting without a token",
                extra={"event": "config_exposure" if token else "alertmanager_token"})
    name = cfg.get("token_env") or ""
    if not token and name and not cfg.get("token_file"):
        log.error("alertmanager.token_env: $%s is not set; posting without a token", name,
                  extra={"event": "alertmanager_token"})
    if token:
        redact.register(token)
    return token


def send(urls, body: bytes, token: str | None, timeout: float, monotonic=time.monotonic,
         deadline: float | None = None) -> list[tuple]:
    """POST `body` to API_PATH of every URL at once; return [(url, error or None)] within `timeout`
    (or by `deadline`, a `monotonic` time).

    Each exchange runs in a daemon thread; one that has no whole answer at the deadline
    is abandoned (its socket shut) and counted as failed.
    """
    deadline = monotonic() + timeout if deadline is None else deadline
    boxes = [_start(_exchange, {"url": url}, body, token, timeout, deadline, monotonic) for url in urls]
    return [(box["url"], _wait(box, deadline, timeout, monotonic) or box.get("error")) for box in boxes]


def start_relays(urls, requests: list, token: str | None, timeout: float, deadline: float,
                 monotonic=time.monotonic) -> list[dict]:
    """Start each silence request (`plan_relays`) in its own thread: to one replica after another."""
    return [_start(_relay, {"key": r["key"]}, urls, r, token, timeout, deadline, monotonic) for r in requests]


def finish_relays(boxes: list[dict], requests: list, deadline: float, monotonic=time.monotonic) -> dict:
    """Wait for the silence requests until `deadline`; log each; return {key: outcome}."""
    outcomes = {}
    for box, request in zip(boxes, requests):
        late = _wait(box, deadline, None, monotonic)
        outcome = {k: box.get(k) for k in ("ok", "id", "startsAt", "gone")} if not late else {}
        outcomes[box["key"]] = outcome
        what = _relay_name(box["key"])
        expiry = request["method"] == "DELETE"
        if outcome.get("ok") or (expiry and outcome.get("gone")):
            log.info("alertmanager: %s %s", what, "expired" if expiry else f"held by silence {outcome.get('id')}",
                     extra={"event": "alertmanager_silence", "silence": outcome.get("id")})
            continue
        errors = "; ".join(f"{shown(url)}: {error}" for url, error in box.get("errors", [])) or late or "not sent"
        log.warning("alertmanager: %s not %s (%s); the next run tries again", what,
                    "expired" if expiry else "relayed", errors, extra={"event": "alertmanager_silence_failed"})
    return outcomes


def _relay_name(key: str) -> str:
    kind, _, name = key.partition(":")
    return f"the ack of {name}" if kind == "ack" else f"monitor silence {name}"


def _start(target, box: dict, *args) -> dict:
    box["done"] = threading.Event()
    threading.Thread(target=target, args=(box, *args), name="alertmanager", daemon=True).start()
    return box


def _wait(box: dict, deadline: float, timeout: float | None, monotonic) -> str | None:
    """Wait for an exchange until `deadline`; None when it ended, else why it was abandoned (its socket shut)."""
    if box["done"].wait(max(deadline - monotonic(), 0.0)):
        return None
    _shut(box.get("sock"))  # the thread may still write its own error: this one is what is said
    return "no whole answer within " + (f"{timeout:g}s" if timeout is not None else "alertmanager.timeout")


def _exchange(box: dict, body: bytes, token: str | None, timeout: float, deadline: float, monotonic) -> None:
    """POST the alerts to one replica."""
    try:
        reply = _call("POST", box["url"], API_PATH, body, token, deadline, monotonic, box)
        if not 200 <= reply.status < 300:
            box["error"] = _http_error(reply)
    except Exception as exc:  # noqa: BLE001 - any failure is this replica's alone
        box["error"] = _failure(exc, timeout)
    finally:
        box["done"].set()


def _relay(box: dict, urls, request: dict, token: str | None, timeout: float, deadline: float,
           monotonic) -> None:
    """One silence request, to one replica after another until one takes it (gossip copies it to
    the others). Each replica gets its share of the time left, so one that hangs does not
    cost the others their turn. A new silence's start is read back (GET), so that the next
    update (an ack's renewal) is made in place rather than as a new silence."""
    errors, missing = [], 0
    body = json.dumps(request["body"]).encode() if request["body"] is not None else b""
    try:
        for i, url in enumerate(urls):
            share = (deadline - monotonic()) / (len(urls) - i)
            if share <= 0:
                errors.append((url, "no time left"))
                continue
            try:
                reply = _call(request["method"], url, request["path"], body, token, monotonic() + share,
                              monotonic, box)
            except Exception as exc:  # noqa: BLE001 - this replica's alone: the next one is tried
                errors.append((url, _failure(exc, share)))
                continue
            if 200 <= reply.status < 300:
                if request["method"] == "DELETE":
                    box["ok"] = True
                    return
                silence_id = _silence_id(reply.body)
                if silence_id is None:
                    errors.append((url, f"HTTP {reply.status} without a silence id"))
                    continue
                box.update(ok=True, id=silence_id)
                if silence_id != request["body"].get("id"):
                    box["startsAt"] = _starts_at(url, silence_id, token, deadline, monotonic, box)
                return
            # Not found: 404 (a silence id no replica knows), or 500 "silence not found" (a DELETE, 0.25).
            missing += reply.status == 404 or (reply.status == 500 and b"not found" in reply.body[:200].lower())
            errors.append((url, _http_error(reply)))
        box["gone"] = bool(urls) and missing == len(urls)
    finally:
        box["errors"] = errors
        box["done"].set()


def _silence_id(raw: bytes) -> str | None:
    try:
        found = json.loads(raw).get("silenceID")
    except (ValueError, AttributeError, RecursionError):
        return None
    return found if isinstance(found, str) and _SILENCE_ID.fullmatch(found) else None


def _starts_at(url: str, silence_id: str, token: str | None, deadline: float, monotonic, box: dict) -> str | None:
    """The start Alertmanager gave a new silence (its request's, or its own now when that was past)."""
    try:
        reply = _call("GET", url, SILENCE_PATH + silence_id, b"", token, deadline, monotonic, box)
        found = json.loads(reply.body).get("startsAt") if reply.status == 200 else None
    except Exception:  # noqa: BLE001 - not known: the next update makes a new silence, no harm
        return None
    return found if isinstance(found, str) and len(found) <= 40 and _TIME.fullmatch(found) else None


def _call(method: str, base: str, path: str, body: bytes, token: str | None, deadline: float, monotonic,
          hold: dict):
    """One request to one replica through monitor's socket client (`rawhttp`: one deadline for
    every step, the answer capped; no http.client, whose `email` import costs a run ~70 ms)."""
    import base64
    from urllib.parse import unquote, urlsplit

    from monitor import rawhttp

    parts = urlsplit(base)
    headers = {"Accept-Encoding": "identity", "User-Agent": "monitor-alertmanager"}
    if body:
        headers["Content-Type"] = "application/json"
    if token:
        headers["Authorization"] = f"Bearer {token}"
    elif parts.username:  # user:${PASSWORD}@: basic auth, never in the request line
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
    url = parts._replace(path=parts.path.rstrip("/") + path, query="", fragment="").geturl()
    return rawhttp.request(method, url, body, headers, max(deadline - monotonic(), 0.01), MAX_ANSWER,
                           monotonic, hold=hold)


def _http_error(reply) -> str:
    text = printable(redact.scrub(reply.body[:200].decode("utf-8", "replace"))).strip()
    return f"HTTP {reply.status}" + (f": {text}" if text else "")


def _failure(exc: Exception, timeout: float) -> str:
    if isinstance(exc, TimeoutError):  # the socket's own timeout is the deadline: one wording for both
        return f"no whole answer within {timeout:g}s"
    from monitor import rawhttp

    # Not net_errors.describe: it imports requests (~150 ms) for a replica that is down.
    return printable(redact.scrub(rawhttp.describe(exc)))[:200]


def _shut(sock) -> None:
    """Let an abandoned exchange's socket go now (its thread gives up on its next read)."""
    try:
        if sock is not None:
            import socket

            sock.shutdown(socket.SHUT_RDWR)
    except Exception:  # noqa: BLE001 - best effort
        pass
