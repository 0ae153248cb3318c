"""Alertmanager as an alert sink: a run's active alerts, posted to every replica.

The Alertmanager HA model: a client sends every alert to every replica and the
cluster de-duplicates, groups, inhibits, silences and notifies. Each run of a
command POSTs `/api/v2/alerts` to each URL of `alertmanager.urls` with the alerts of
its checks that are active: non-ok for `alerts.alert_after` runs (or flapping after
that) and not silenced in monitor. An alert's `endsAt` is now + 3 x the command's
schedule period, so one late run does not resolve it; once the check is ok (or gone
from the config, or its labels changed, e.g. warning -> critical) it is posted once
more with `endsAt` = now. Those RESOLVED alerts are kept in `state/alertmanager.json`
and sent again by every run until at least one replica accepted them: a RESOLVED is
never lost. What was posted firing is kept there too, to know what to resolve.

`plan` decides from plain data (tests/test_alertmanager.py); `post` reads and saves the
state file (under notify.py's lock), reads the token and talks HTTP, every replica at
once, the whole step within `alertmanager.timeout`, at most 64 KB of each answer read.
"""

import json
import logging
import os
import sys
import threading
import time
from datetime import datetime, timezone

from monitor import redact, state
from monitor.results import CRITICAL, OK, UNKNOWN
from monitor.text import ID_CHARS, clip, printable

log = logging.getLogger("monitor")
STATE_FILE = "alertmanager.json"
API_PATH = "/api/v2/alerts"
MAX_ANSWER = 64 * 1024    # Alertmanager answers with a few bytes; more is not read
MAX_PENDING = 1000        # RESOLVED alerts kept for retry; beyond, the oldest go (an ERROR record)
LIFETIME_PERIODS = 3      # endsAt = now + this x the command's schedule period
HOST_CHARS = 64


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


def _record(result, entry: dict, command: str, host: str, environment: str) -> dict:
    """The firing alert of one non-ok result: labels, annotations, startsAt, and what it came from."""
    from monitor.alerts.messages import headline  # composes the value > threshold words

    check = clip(result.id, ID_CHARS)
    severity = CRITICAL if result.status == CRITICAL else "warning"  # unknown alerts as a warning
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


def plan(stored: dict, results, entries: dict, silences: list, command: str, kinds_run, host: str,
         environment: str, alert_after: int, now: float, period: float):
    """Given the stored sink state and this run's results, return (alerts to post, new state).

    `entries` is the alert state after this run (`plan.tell`); `silences` the active
    silences. A silenced check is neither posted nor resolved while silenced; an alert
    whose labels changed is resolved under its old labels. Firing alerts of other
    commands, and of checks this run did not judge (`--only`), are kept as they are:
    the runs that judge them post them.
    """
    from monitor.alerts.silences import matching

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
        if matching(silences, r.id):
            if old:
                firing[r.id] = old  # not posted while silenced; resolved once ok and told
            continue
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
    posts = [_payload(record, ends) for check_id, record in firing.items()  # what this run judged
             if check_id in seen and not matching(silences, check_id)]
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


# --- reading, sending, saving ---------------------------------------------------------------

def post(config: dict, command: str, results, kinds_run, entries: dict, silences: list, host: str,
         now: float, period: float | None = None, environ=os.environ, monotonic=time.monotonic) -> dict:
    """Post this run's active alerts and the RESOLVED ones kept for retry; return the counts.

    Never raises for a network or state problem: each replica's failure is a WARNING
    record; the RESOLVED alerts stay in state until a replica accepts them; a state
    file that cannot be read or written is said in `state_error`. `period`: the
    command's schedule period (default: its `jobs.Job` record's).
    """
    if period is None:
        from monitor.jobs import JOBS

        period = JOBS[command].period if command in JOBS else 300.0
    cfg = config["alertmanager"]
    path = os.path.join(config["paths"]["state"], STATE_FILE)
    problem = None
    try:
        stored = state.read_json(path, default={})
    except (state.StateError, OSError) as exc:
        stored, problem = {}, f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}"
    alerts, updated, dropped = plan(stored, results, entries, silences, command, kinds_run, host,
                                    config["environment"], config["alerts"]["alert_after"], now, period)
    for alert in dropped:
        log.error("dropped a RESOLVED for Alertmanager never accepted (%s on %s): more than %d waiting",
                  alert["labels"].get("check"), alert["labels"].get("instance"), MAX_PENDING,
                  extra={"event": "alertmanager_dropped"})
    firing = sum(1 for a in alerts if "resolvedAt" not in a)
    summary = {"firing": firing, "resolved": len(alerts) - firing, "accepted": 0, "urls": len(cfg["urls"]),
               "pending": len(updated["resolved"])}
    if alerts:
        token = read_token(cfg, environ)
        body = json.dumps([wire(a) for a in alerts]).encode()
        answers = send(cfg["urls"], body, token, cfg["timeout"], monotonic)
        summary["accepted"] = sum(error is None for _, error in answers)
        for url, error in answers:
            if error:
                log.warning("alertmanager %s: %s", shown(url), error, extra={"event": "alertmanager_failed"})
        if all(error and error.startswith("HTTP 4") for _, error in answers):
            # Every replica refused (a wrong token or path): no retry mends that. Cron mails stderr.
            problem = (f"alertmanager: every replica refused the alerts "
                       f"({'; '.join(sorted({clip(error, 80) for _, error in answers}))}): "
                       "check alertmanager.urls and its token")
            print(f"monitor {command}: {problem}", file=sys.stderr)
            log.error("%s", problem, extra={"event": "alertmanager_refused"})
        if summary["accepted"]:
            updated["resolved"] = []
        elif updated["resolved"]:
            log.warning("no Alertmanager accepted the alerts: %d RESOLVED kept in %s for the next run",
                        len(updated["resolved"]), path, extra={"event": "alertmanager_kept"})
        summary["pending"] = len(updated["resolved"])
    if updated != {"firing": stored.get("firing", {}), "resolved": stored.get("resolved", [])} and not problem:
        try:
            state.write_json(path, updated)
        except OSError as exc:
            problem = f"cannot save {path}: {exc.strerror}"
            if updated["resolved"]:
                log.error("could not save %d RESOLVED for Alertmanager (%s): they are lost",
                          len(updated["resolved"]), exc.strerror, extra={"event": "alertmanager_write_error"})
    if problem:
        summary["state_error"] = problem
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


def send(urls, body: bytes, token: str | None, timeout: float, monotonic=time.monotonic) -> list[tuple]:
    """POST `body` to API_PATH of every URL at once; return [(url, error or None)] within `timeout`.

    Each exchange runs in a daemon thread; one that has no whole answer at the deadline
    is abandoned (its socket shut) and counted as failed.
    """
    deadline = monotonic() + timeout
    boxes = [{"url": url, "done": threading.Event(), "timeout": timeout} for url in urls]
    for box in boxes:
        threading.Thread(target=_exchange, args=(box, body, token, deadline, monotonic),
                         name="alertmanager-post", daemon=True).start()
    out = []
    for box in boxes:
        if not box["done"].wait(max(deadline - monotonic(), 0.0)):
            _shut(box.get("sock"))
            box.setdefault("error", f"no whole answer within {timeout:g}s")
        out.append((box["url"], box.get("error")))
    return out


def _exchange(box: dict, body: bytes, token: str | None, deadline: float, monotonic) -> None:
    """POST to one replica through monitor's socket client (`rawhttp`: one deadline for every
    step, the answer capped; no http.client, whose `email` import costs a run ~70 ms)."""
    import base64
    from urllib.parse import unquote, urlsplit

    from monitor import rawhttp

    try:
        parts = urlsplit(box["url"])
        headers = {"Content-Type": "application/json", "Accept-Encoding": "identity",
                   "User-Agent": "monitor-alertmanager"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        elif parts.username:  # user:${PASSWORD}@: basic auth, never in the request line
            pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        url = parts._replace(path=parts.path.rstrip("/") + API_PATH, query="", fragment="").geturl()
        reply = rawhttp.request("POST", url, body, headers, max(deadline - monotonic(), 0.01), MAX_ANSWER,
                                monotonic, hold=box)
        if not 200 <= reply.status < 300:
            text = printable(redact.scrub(reply.body[:200].decode("utf-8", "replace"))).strip()
            box["error"] = f"HTTP {reply.status}" + (f": {text}" if text else "")
    except TimeoutError:  # the socket's own timeout is the deadline: one wording for both
        box["error"] = f"no whole answer within {box['timeout']:g}s"
    except Exception as exc:  # noqa: BLE001 - any failure is this replica's alone
        # Not net_errors.describe: it imports requests (~150 ms) for a replica that is down.
        box["error"] = printable(redact.scrub(rawhttp.describe(exc)))[:200]
    finally:
        box["done"].set()


def _shut(sock) -> None:
    """Let an abandoned exchange's socket go now (its thread gives up on its next read)."""
    try:
        if sock is not None:
            import socket

            sock.shutdown(socket.SHUT_RDWR)
    except Exception:  # noqa: BLE001 - best effort
        pass
