"""Notifications of a run: outbox first, then this run's alerts, one message per chat.

Shared by every command. Under `state/notify.lock` (commands may run in parallel but
share alert state and outbox) it: evaluates alert transitions, drops silenced alerts,
delivers what the outbox holds (alerts first, then info and report texts, oldest
first within each), sends this run's message, keeps whatever Telegram did not accept
in the outbox, and saves the alert state. An alert counts as told once Telegram
accepted it or it sits in the outbox; nothing leaves the outbox without delivery or
an ERROR record. Without a bot token the run's messages go to the outbox too, and the
run says so on stderr (cron mails it, even under --quiet) and in an ERROR record.
"""

import logging
import os
import sys
import time

from monitor import redact, state
from monitor.alerts import state as alert_state
from monitor.alerts import silences

log = logging.getLogger("monitor")
ALERTS_FILE = "alerts.json"


class Summary(dict):
    """The JSON `notifications` object: sent, queued, silenced, failed, outbox."""

    def __init__(self):
        super().__init__(sent=0, queued=0, silenced=0, failed=0, outbox=0)


def notify(config: dict, command: str, results, kinds_run, host: str, *, no_notify=False,
           dry_run=False, now: float | None = None, client=None, environ=os.environ,
           message: tuple[str, bool] | None = None) -> Summary:
    """Evaluate alerts for `results` and deliver them; return the counts (and dry-run texts).

    `message` is (text, silent[, check ids]): the command's own text (the daily report),
    which opens this run's one message per chat, ahead of the alerts of checks it does
    not already show.
    """
    now = time.time() if now is None else now
    folder = config["paths"]["state"]
    summary = Summary()
    lock = state.RunLock(folder, "notify", wait=30.0)
    try:
        lock.acquire()
    except (state.StateError, OSError) as exc:
        # Unwritable state must not silence alerts: go on without the lock; the worst
        # case is a duplicate message.
        lock = None
        summary["state_error"] = f"cannot lock {folder}: {getattr(exc, 'strerror', None) or exc}"
    if lock and lock.problem:  # a planted notify.lock: the lock holds, but say so
        summary["state_error"] = lock.problem
    try:
        entries_path = os.path.join(folder, ALERTS_FILE)
        try:
            stored = _load_entries(entries_path)
        except (state.StateError, OSError) as exc:
            stored = {}
            summary.setdefault("state_error", f"cannot read {entries_path}: {getattr(exc, 'strerror', None) or exc}")
        rules = config["alerts"]
        alerts, entries = alert_state.evaluate(stored.get("checks", {}), results, command, kinds_run, now,
                                               rules["alert_after"], rules["repeat_interval"],
                                               rules["send_resolved"], rules["flap_window"])
        try:
            active = silences.load(folder, now)
        except (state.StateError, OSError) as exc:
            active = []
            summary.setdefault("state_error", f"cannot read silences: {getattr(exc, 'filename', None) or folder}: "
                                              f"{getattr(exc, 'strerror', None) or exc}")
        to_send = []
        for alert in alerts:
            silence = silences.matching(active, alert.check_id)
            if silence:
                summary["silenced"] += 1
                log.info("%s %s silenced by %s (%s)", alert.check_id, alert.status, silence["pattern"],
                         silence.get("reason") or "no reason",
                         extra={"event": "silenced", "check": alert.check_id, "silence": silence["id"]})
            else:
                to_send.append(alert)

        tg = config.get("telegram")
        # One message per chat: the command's own text (the daily report) first, then
        # the alerts; it rings unless every part is silent.
        parts, silent = ([message[0]], message[1]) if message else ([], True)
        # A third item names the checks the text itself shows (the report's own warnings):
        # their alerts are told by it, not repeated under it; a RESOLVED still is.
        shows = set(message[2]) if message and len(message) > 2 else set()
        listed = [a for a in to_send if a.check_id not in shows or a.status == alert_state.RESOLVED]
        alerts_text, alerts_ring = None, False
        if to_send:
            from monitor.alerts import messages

            alerts_ring = messages.rings(to_send)
            if listed:
                alerts_text = messages.compose(listed, host, config["environment"], now)
                parts.append(alerts_text)
            silent = silent and not alerts_ring
        text = "\n\n".join(parts) or None
        about = [[a.check_id, a.status] for a in to_send]
        if dry_run:
            summary["dry_run"] = [{"chat_id": c, "text": text} for c in (tg or {}).get("chat_ids", [])] if text else []
            if text and not (tg and tg["chat_ids"]):
                summary["dry_run"] = [{"chat_id": None, "text": text}]
            if tg:
                from monitor.alerts import outbox

                summary["outbox"] = outbox.count(folder)
            return summary  # a dry run changes nothing

        queue = []
        if tg:  # loaded under --no-notify too: what waits is reported, not sent nor rewritten
            from monitor.alerts import outbox

            try:
                queue = outbox.load(folder)
            except OSError as exc:
                summary.setdefault("state_error", f"cannot read the outbox {outbox.path(folder)}: {exc.strerror}")
        migrations = stored.get("chat_migrations", {})
        told = False
        if no_notify:
            pass
        elif not tg or not tg["chat_ids"]:
            log.info("notifications are off: %s", "no [telegram] section" if not tg else "telegram.chat_ids is empty",
                     extra={"event": "notifications_off"})
        else:
            if client is None:
                from monitor.alerts.bot_token import resolve_token

                token, source = resolve_token(config, environ, folder)
            else:
                token, source = "-", "client"
            fresh = set()
            pieces = _pieces(text, silent, about, message, alerts_text, alerts_ring)
            for chat in tg["chat_ids"]:
                for chunk, chunk_silent, chunk_about in pieces:
                    item = outbox.new_message(migrations.get(chat, chat), chunk, chunk_silent, now, chunk_about)
                    fresh.add(item["id"])
                    queue.append(item)  # behind anything older for the same chat
            told = True  # accepted by Telegram or waiting in the outbox
            if token:
                if client is None:
                    from monitor.alerts.telegram import TelegramClient

                    client = TelegramClient(token, tg["api_url"], tg["timeout"])
                queue = _deliver(queue, client, now, tg["outbox_max_age"], migrations, summary, command)
            else:
                queue = _expire(queue, now, tg["outbox_max_age"])
                # Cron mails stderr, even under --quiet: the one place an operator hears of it.
                problem = redact.scrub(f"telegram: no bot token ({source}); {len(queue)} message(s) wait in "
                                       f"{outbox.path(folder)} for the first run that has one")
                print(f"monitor {command}: {problem}", file=sys.stderr)
                log.error("%s", problem, extra={"event": "telegram_no_token", "outbox": len(queue)})
            summary["queued"] = sum(m["id"] in fresh for m in queue)
        if told:
            alert_state.mark_notified(entries, to_send, now)
        summary["outbox"] = len(queue)
        try:
            if tg and not no_notify:
                outbox.save(folder, queue)
            updated = {"version": alert_state.STATE_VERSION, "checks": entries, "chat_migrations": migrations}
            if updated != stored:  # steady state: nothing changed, nothing to fsync
                state.write_json(entries_path, updated)
        except OSError as exc:
            summary["state_error"] = f"cannot save alert state in {folder}: {exc.strerror}"
            if queue and not no_notify:
                log.error("could not save the outbox (%s): %d undelivered message(s) will be lost: %s",
                          exc.strerror, len(queue), "; ".join(outbox.describe(m) for m in queue),
                          extra={"event": "outbox_write_error"})
        return summary
    finally:
        if lock:
            lock.release()


def _pieces(text, silent, about, message, alerts_text, alerts_ring) -> list[tuple[str, bool, list]]:
    """This run's outbox items for one chat: (text under 4096, silent, alerts it tells).

    One message when it fits; otherwise the alerts and the command's own text (a long
    daily report) are split apart, so the alerts can be delivered first.
    """
    from monitor.alerts.telegram import split_message

    if not text:
        return []
    chunks = split_message(text)
    if len(chunks) == 1 or not (message and alerts_text):
        return [(chunk, silent, about) for chunk in chunks]
    return ([(chunk, not alerts_ring, about) for chunk in split_message(alerts_text)]
            + [(chunk, message[1], []) for chunk in split_message(message[0])])


def _rank(message: dict) -> int:
    """Alerts (critical, warning, could not check, and their RESOLVED, so they stay in
    order) go before info and report texts."""
    return 0 if message.get("alerts") else 1


def _expire(queue: list[dict], now: float, max_age: float) -> list[dict]:
    """Drop what waited longer than `telegram.outbox_max_age`, each with an ERROR record."""
    from monitor.alerts import outbox

    kept = []
    for message in queue:
        if now - message.get("created", now) > max_age:
            log.error("dropped undelivered %s: older than telegram.outbox_max_age (last error: %s)",
                      outbox.describe(message), message.get("last_error") or "none",
                      extra={"event": "outbox_dropped", "message_id": message.get("id")})
            continue
        kept.append(message)
    return kept


def _deliver(queue: list[dict], client, now: float, max_age: float, migrations: dict, summary: Summary,
             command: str) -> list[dict]:
    """Send what the outbox holds, alerts first, then oldest first; return what is left.

    A chat whose delivery failed gets nothing more this run, so its messages keep
    their order. New messages were appended last, so they go after older ones of
    their class.
    """
    queue = sorted(_expire(queue, now, max_age), key=_rank)  # stable: oldest first within a class
    left, blocked, reported = [], set(), set()
    for message in queue:
        chat = migrations.get(message["chat_id"], message["chat_id"])
        if chat in blocked or (message.get("not_before") or 0) > now:
            blocked.add(chat)  # Telegram asked us to wait: newer messages wait too, in order
            left.append(message)
            continue
        delivery = client.send(chat, message["text"], message.get("disable_notification", False))
        if delivery.ok:
            summary["sent"] += 1
            if delivery.migrated_from:
                migrations[delivery.migrated_from] = delivery.chat_id
                warning = (f"Telegram moved chat {delivery.migrated_from} to {delivery.chat_id} "
                           f"(group upgraded to supergroup): update telegram.chat_ids in the config")
                log.warning("%s", warning, extra={"event": "chat_migrated"})
                print(f"monitor {command}: {warning}", file=sys.stderr)
            continue
        summary["failed"] += 1
        blocked.add(chat)
        message.update(attempts=message.get("attempts", 0) + 1, last_error=delivery.error,
                       not_before=delivery.retry_at, chat_id=chat)
        left.append(message)
        if delivery.error not in reported:
            reported.add(delivery.error)
            if delivery.config_error:
                print(f"monitor {command}: telegram configuration error: {delivery.error}", file=sys.stderr)
                log.error("telegram configuration error: %s; message kept in the outbox", delivery.error,
                          extra={"event": "telegram_config_error"})
            else:
                log.warning("telegram delivery failed: %s; message kept in the outbox", delivery.error,
                            extra={"event": "telegram_failed"})
    return left


def _load_entries(path: str) -> dict:
    data = state.read_json(path, default={})
    version = data.get("version", alert_state.STATE_VERSION)
    if version != alert_state.STATE_VERSION:
        aside = f"{path}.corrupt-{int(time.time())}"
        os.replace(path, aside)
        log.warning("alert state %s is from another version (%s); moved to %s, starting afresh",
                    path, redact.scrub(version), aside, extra={"event": "state_corrupt"})
        return {}
    if not isinstance(data.get("checks"), dict):
        data["checks"] = {}
    if not isinstance(data.get("chat_migrations"), dict):
        data["chat_migrations"] = {}
    return data
