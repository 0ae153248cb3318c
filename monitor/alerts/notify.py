"""Notifications of a run: outbox first, then this run's alerts, one message per chat.

Shared by every command. Under `state/notify.lock` (commands may run in parallel but
share alert state and outbox) it: evaluates alert transitions, drops silenced alerts,
delivers what the outbox holds (alerts first, then info and report texts, oldest
first within each), sends this run's message, keeps whatever Telegram did not accept
in the outbox, and saves the alert state. An alert counts as told once Telegram
accepted it or it sits in the outbox; nothing leaves the outbox without delivery or
an ERROR record. Without a bot token the run's messages go to the outbox too, and the
run says so on stderr (cron mails it, even under --quiet) and in an ERROR record.

What to tell, queue and save is decided in `plan.py` from plain data; this module
reads the state files, talks to Telegram and saves, and is the only one that does.

With chats to talk to, it first reads what the operators said since the last run
(`bot.Inbox`: /ack and /mute count for this run's alerts); their replies are queued
behind this run's alerts, the offset of the updates handled is saved with the alert
state and that outbox before anything is sent (a run killed while sending never
answers twice), and button presses are answered once the run's state is saved.

The lock is held for a bounded time: the run's whole Telegram step (reading, sending,
answering presses) has TELEGRAM_BUDGET seconds (or telegram.timeout if longer; the
Alertmanager step, bounded by alertmanager.timeout, is not counted in it), a
send that Telegram does not answer at all ends the sending for this run (the others
would wait out the timeout too), and the lock's wait is longer than a run can hold
it. A run that still waits it out leaves a message it alone would tell (the daily
report) in `pending.py`, for the next run.
"""

import logging
import os
import sys
import time

from monitor import redact, state
from monitor.alerts import plan, silences
from monitor.alerts import state as alert_state

log = logging.getLogger("monitor")
ALERTS_FILE = "alerts.json"
TELEGRAM_BUDGET = 20.0  # s: a run's whole Telegram step; what does not fit waits in the outbox
LOCK_WAIT = 30.0        # s: at least; longer when the configured timeouts let a run hold the lock longer


def telegram_budget(config: dict) -> float:
    """Seconds a run may spend talking to Telegram in all (reading, sending, answering presses)."""
    return max(TELEGRAM_BUDGET, float((config.get("telegram") or {}).get("timeout") or 0))


def lock_wait(config: dict) -> float:
    """How long a run waits for the notify lock: longer than another run can hold it."""
    alertmanager = float((config.get("alertmanager") or {}).get("timeout") or 0)
    return max(LOCK_WAIT, telegram_budget(config) + alertmanager + 10)


class Summary(dict):
    """The JSON `notifications` object: sent, queued, silenced, failed, outbox."""

    def __init__(self):
        super().__init__(sent=0, queued=0, silenced=0, failed=0, outbox=0)


def notify(config: dict, command: str, results, kinds_run, host: str, *, no_notify=False,
           dry_run=False, now: float | None = None, client=None, environ=os.environ,
           message: tuple[str, bool] | None = None, wait: float | None = None) -> Summary:
    """Evaluate alerts for `results` and deliver them; return the counts (and dry-run texts).

    `message` is (text, silent[, check ids]): the command's own text (the daily report),
    which opens this run's one message per chat, ahead of the alerts of checks it does
    not already show. What to tell and queue is decided in `plan`; this reads the
    files, sends and saves, under the lock, waiting for it `wait` seconds (`lock_wait`).
    Raise state.LockHeld when it waited in vain; `message` then waits in a pending
    file for the next run (the exception's `pending` names it).
    """
    now = time.time() if now is None else now
    folder = config["paths"]["state"]
    summary = Summary()
    lock = state.RunLock(folder, "notify", wait=lock_wait(config) if wait is None else wait)
    try:
        lock.acquire()
    except state.LockHeld as exc:
        exc.pending = _keep_pending(config, command, host, now, message) if message and not (
            dry_run or no_notify) else None
        raise
    except (state.StateError, OSError) as exc:
        # Unwritable state must not silence alerts: go on without the lock; the worst
        # case is a duplicate message.
        lock = None
        summary["state_error"] = f"cannot lock {folder}: {getattr(exc, 'strerror', None) or exc}"
    if lock and lock.problem:  # a planted notify.lock: the lock holds, but say so
        summary["state_error"] = lock.problem
    try:
        return _notify(config, command, results, kinds_run, host, no_notify, dry_run, now, client, environ,
                       message, summary)
    finally:
        if lock:
            lock.release()


def _notify(config, command, results, kinds_run, host, no_notify, dry_run, now, client, environ, message,
            summary: Summary) -> Summary:
    """Read the alert state, silences and outbox; plan; deliver; save. Held under the lock."""
    folder = config["paths"]["state"]
    entries_path = os.path.join(folder, ALERTS_FILE)
    try:
        stored = _load_entries(entries_path)
    except (state.StateError, OSError) as exc:
        stored = {}
        summary.setdefault("state_error", f"cannot read {entries_path}: {getattr(exc, 'strerror', None) or exc}")
    try:
        active = silences.load(folder, now)
    except (state.StateError, OSError) as exc:
        active = []
        summary.setdefault("state_error", f"cannot read silences: {getattr(exc, 'filename', None) or folder}: "
                                          f"{getattr(exc, 'strerror', None) or exc}")
    tg = config.get("telegram")
    inbox = client_source = None
    if tg and tg["chat_ids"] and not (dry_run or no_notify):
        started = time.monotonic()
        client, client_source = _client(config, client, environ, folder)
        if hasattr(client, "deadline"):  # one budget for the whole step: the lock is never outlasted
            # (the bot token's read from Vault included: lock_wait does not count it apart)
            client.deadline = client.monotonic() + telegram_budget(config) - (time.monotonic() - started)
        if client is not None and hasattr(client, "call"):
            from monitor.alerts import bot

            inbox = bot.Inbox(config, folder, stored.get("telegram"), now, command, stored.get("chat_migrations"))
            inbox.read(client)
            inbox.handle(stored.setdefault("checks", {}), active)
    told = plan.tell(config, command, results, kinds_run, host, stored.get("checks", {}), active, now, message)
    for alert, silence in told.silenced:
        summary["silenced"] += 1
        log.info("%s %s silenced by %s (%s)", alert.check_id, alert.status, silence["pattern"],
                 silence.get("reason") or "no reason",
                 extra={"event": "silenced", "check": alert.check_id, "silence": silence["id"]})
    if dry_run:
        summary["dry_run"] = told.previews
        if tg:
            from monitor.alerts import outbox

            summary["outbox"] = outbox.count(folder)
        return summary  # a dry run changes nothing
    if config.get("alertmanager") and not no_notify:  # a sink of its own, with or without Telegram
        _alertmanager(config, command, results, kinds_run, told.entries, active, host, now, environ, client,
                      summary)

    waiting, pending_files = [], []
    if tg:  # loaded under --no-notify too: what waits is reported, not sent nor rewritten
        from monitor.alerts import outbox

        try:
            waiting = outbox.load(folder)
        except OSError as exc:
            summary.setdefault("state_error", f"cannot read the outbox {outbox.path(folder)}: {exc.strerror}")
        else:
            if not no_notify:  # a report left by a run that waited out the lock
                waiting, pending_files = _take_pending(folder, waiting)
    migrations = dict(stored.get("chat_migrations", {}))  # a copy: compared with `stored` below
    held = plan.hold(told, config, waiting, migrations, now, no_notify)
    if held.off and not config.get("alertmanager"):
        log.info("notifications are off: %s", held.off, extra={"event": "notifications_off"})
    queue = held.outbox
    if held.deliver:
        _buttons(queue, held.fresh)
    if inbox is not None:
        from monitor.alerts import outbox as outbox_module

        queue = queue + inbox.reply_messages(held.entries, host, bot.last_runs(folder, command, now),
                                             outbox_module.new_message, {m.get("id") for m in queue})
    saved = stored
    read = inbox is not None and inbox.state.get("offset") != (stored.get("telegram") or {}).get("offset")
    if (read or pending_files) and held.save_outbox:
        # Confirm the updates read (their offset, with the acks, and the replies in the
        # outbox) before anything is sent: a run killed while sending never answers twice.
        # Pending files go once the outbox holds their messages, before they are sent: a
        # run that fails after sending them (its state unsaved) does not queue them again.
        try:
            saved = _save(folder, entries_path, queue, held, migrations, inbox, stored, stored)
        except OSError:
            pass  # said by the save after delivery, which tries again
        else:
            if pending_files:
                from monitor.alerts import pending

                pending.done(pending_files)
                pending_files = []
    reached = None
    if held.deliver:
        if client is None and client_source is None:  # not resolved above (nothing to read)
            client, client_source = _client(config, None, environ, folder)
        token, source = ("-", "client") if client is not None else (None, client_source)
        for dropped in held.dropped:
            log.error("dropped undelivered %s: older than telegram.outbox_max_age (last error: %s)",
                      outbox.describe(dropped), dropped.get("last_error") or "none",
                      extra={"event": "outbox_dropped", "message_id": dropped.get("id")})
        if token:
            queue, reached = _deliver(queue, client, now, migrations, summary, command)
        else:
            # Cron mails stderr, even under --quiet: the one place an operator hears of it.
            problem = redact.scrub(f"telegram: no bot token ({source}); {len(queue)} message(s) wait in "
                                   f"{outbox.path(folder)} for the first run that has one")
            print(f"monitor {command}: {problem}", file=sys.stderr)
            log.error("%s", problem, extra={"event": "telegram_no_token", "outbox": len(queue)})
        summary["queued"] = sum(m["id"] in held.fresh for m in queue)
    if inbox is not None and reached is not None:
        if reached:
            inbox.state.pop("unreachable", None)
        else:  # the next runs send before they read again
            inbox.state["unreachable"] = now
    summary["outbox"] = len(queue)
    try:
        _save(folder, entries_path, queue, held, migrations, inbox, stored, saved)
        if pending_files:
            from monitor.alerts import pending

            pending.done(pending_files)  # their messages are in the saved outbox now
    except OSError as exc:
        summary["state_error"] = f"cannot save alert state in {folder}: {exc.strerror}"
        if queue and not no_notify:
            log.error("could not save the outbox (%s): %d undelivered message(s) will be lost: %s",
                      exc.strerror, len(queue), "; ".join(outbox.describe(m) for m in queue),
                      extra={"event": "outbox_write_error"})
    if inbox is not None and client is not None:
        # After the state is saved: "acked by @anna" is said once the ack holds.
        inbox.answer_presses(client, float(tg["timeout"]))
    if message and command == "daily-report" and tg and held.deliver:
        from monitor.alerts.bot import report_path

        try:  # for /report: its own step, after what holds the alerts
            state.write_json(report_path(folder), {"text": message[0], "at": now})
        except OSError as exc:
            log.warning("could not keep the report for /report: %s", exc.strerror,
                        extra={"event": "report_copy_error"})
    return summary


def _alertmanager(config, command, results, kinds_run, entries, active, host, now, environ, client,
                  summary: Summary) -> None:
    """The Alertmanager step, out of Telegram's time (the run's Telegram budget is pushed back by
    what it took, at most alertmanager.timeout + 1 s: `lock_wait` counts both), and never at
    Telegram's cost: a bug in it is an ERROR and `notify_error`, and the delivery goes on."""
    from monitor.alerts import alertmanager

    started = client.monotonic() if getattr(client, "deadline", None) is not None else None
    try:
        summary["alertmanager"] = alertmanager.post(config, command, results, kinds_run, entries, active,
                                                    host, now, environ=environ)
    except Exception as exc:  # noqa: BLE001 - the alerts still go to Telegram
        problem = redact.scrub(f"alertmanager: {type(exc).__name__}: {exc}")
        log.error("%s; the run's other notifications go on", problem, exc_info=True,
                  extra={"event": "alertmanager_error"})
        summary.setdefault("notify_error", problem)
    else:
        for problem in ("state_error", "notify_error"):  # the run's problems, not the sink's counts
            if problem in summary["alertmanager"]:
                summary.setdefault(problem, summary["alertmanager"].pop(problem))
    finally:
        if started is not None:
            took = client.monotonic() - started
            client.deadline += min(max(took, 0.0), float(config["alertmanager"].get("timeout") or 0) + 1)


def _save(folder: str, entries_path: str, queue: list[dict], held, migrations: dict, inbox, stored: dict,
          saved: dict) -> dict:
    """Write the outbox and the alert state (with the bot's offset); return what alerts.json holds."""
    from monitor.alerts import outbox

    if held.save_outbox:
        outbox.save(folder, queue)
    # A copy: `_deliver` adds to `migrations` after an early save, which must not hold them already.
    updated = {"version": alert_state.STATE_VERSION, "checks": held.entries, "chat_migrations": dict(migrations)}
    bot_state = inbox.state if inbox is not None else stored.get("telegram")
    if bot_state:
        updated["telegram"] = dict(bot_state)  # the offset, saved with the acks it led to
    if updated != saved:  # steady state: nothing changed, nothing to fsync
        state.write_json(entries_path, updated)
    return updated


def _keep_pending(config: dict, command: str, host: str, now: float, message: tuple) -> str | None:
    """The command's own message (the report), as the outbox would hold it, in a pending file."""
    if not (config.get("telegram") or {}).get("chat_ids"):
        return None
    from monitor.alerts import pending

    told = plan.tell(config, command, [], set(), host, {}, [], now, message)
    held = plan.hold(told, config, [], {}, now)
    if not held.outbox:
        return None
    try:
        return pending.keep(config["paths"]["state"], held.outbox)
    except OSError as exc:
        log.error("the %s message is lost: the notify lock was held and it could not be kept: %s",
                  command, exc.strerror, extra={"event": "pending_write_error"})
        return None


def _take_pending(folder: str, waiting: list[dict]) -> tuple[list[dict], list[str]]:
    """The outbox with the pending files' messages behind it (none twice); the files."""
    try:  # almost always none: a look at the folder, not an import, for every run
        if not any(name.startswith("pending-") for name in os.listdir(folder)):  # pending.PREFIX
            return waiting, []
    except OSError:
        return waiting, []
    from monitor.alerts import pending

    messages, files = pending.take(folder)
    ids = {m.get("id") for m in waiting}
    return waiting + [m for m in messages if m.get("id") not in ids], files


def _client(config: dict, client, environ, folder: str):
    """(the Telegram client, or None when there is no bot token; where the token came from)."""
    if client is not None:
        return client, "client"
    from monitor.alerts.bot_token import resolve_token

    token, source = resolve_token(config, environ, folder)
    if not token:
        return None, source
    from monitor.alerts.telegram import TelegramClient

    tg = config["telegram"]
    return TelegramClient(token, tg["api_url"], tg["timeout"]), source


def _buttons(queue: list[dict], fresh: set) -> None:
    """Ack / Mute buttons under this run's last alert message to each chat that tells a problem."""
    last = {}
    for message in queue:
        if message["id"] in fresh and message.get("alerts"):
            last[message["chat_id"]] = message
    if not last:
        return
    from monitor.alerts.bot_text import keyboard

    for message in last.values():
        markup = keyboard(message["alerts"])
        if markup:
            message["reply_markup"] = markup


def _deliver(queue: list[dict], client, now: float, migrations: dict, summary: Summary,
             command: str) -> tuple[list[dict], bool | None]:
    """Send what the outbox holds, alerts first, then oldest first; return what is left, and
    whether Telegram answered (None: nothing was sent).

    A chat whose delivery failed gets nothing more this run, so its messages keep
    their order. New messages were appended last, so they go after older ones of
    their class. A send Telegram did not answer at all, or the end of the run's time
    for Telegram (`client.deadline`), leaves the rest for the next run as they are.
    """
    from monitor.alerts.telegram import OUT_OF_TIME

    left, blocked, reported = [], set(), set()
    reached, stopped, deferred = None, None, 0
    for message in plan.delivery_order(queue):
        chat = migrations.get(message["chat_id"], message["chat_id"])
        if stopped is None and getattr(client, "deadline", None) is not None \
                and client.deadline - client.monotonic() < 0.05:
            stopped = "the run's time for Telegram is used up"
        if stopped:
            left.append(message)
            deferred += 1
            continue
        if chat in blocked or (message.get("not_before") or 0) > now:
            blocked.add(chat)  # Telegram asked us to wait: newer messages wait too, in order
            left.append(message)
            continue
        if "png" in message:  # the report's chart: a photo, its caption the headline
            from monitor.alerts.telegram import send_photo

            delivery = send_photo(client, chat, message["png"], message["text"],
                                  message.get("disable_notification", False))
            if delivery.refused:
                # Telegram cannot take this picture (PHOTO_INVALID_DIMENSIONS, IMAGE_PROCESS_FAILED,
                # no right to send photos there): kept, it would hold the report's text back and
                # fail again every run. Dropped, so an ERROR record, as for anything dropped.
                summary["failed"] += 1
                log.error("chart refused by Telegram: %s; the text goes alone", delivery.error,
                            extra={"event": "chart_refused", "message_id": message.get("id")})
                continue
        else:
            markup = {"reply_markup": message["reply_markup"]} if message.get("reply_markup") else {}
            delivery = client.send(chat, message["text"], message.get("disable_notification", False), **markup)
        # "Telegram unreachable": no answer at all; every other chat would wait out the timeout too.
        # Cut short by the run's own time, Telegram was not shown unreachable: the next run reads.
        out_of_time = delivery.error == OUT_OF_TIME
        unanswered = not delivery.ok and (delivery.error or "").startswith("Telegram unreachable")
        if not out_of_time:
            reached = not unanswered if reached is None else reached and not unanswered
        if unanswered:
            stopped = "Telegram did not answer"
        elif out_of_time:
            stopped = "the run's time for Telegram is used up"
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
    if deferred:
        log.warning("telegram: %s: %d message(s) not tried, left in the outbox for the next run", stopped,
                    deferred, extra={"event": "telegram_deferred", "count": deferred})
    return left, reached


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
