"""What a run's notifications do, decided from plain data: the pure half of notify().

Two steps, in the order notify() needs them. `tell` takes the stored alert state,
this run's results, the active silences and the time, and returns which alerts are
told, which are silenced, the one message every chat gets and the alert state after
the run. `hold` takes that and the outbox, and returns what the outbox holds before
delivery (what waited, minus what expired, then this run's messages), whether there
is anything to deliver and which alert entries to save as told. Neither reads a
file, the clock or the network, so each rule is tested with plain data
(tests/test_notify_plan.py); notify.py reads, sends and saves.
"""

from monitor.alerts import state as alert_state
from monitor.alerts.silences import matching


class Told:
    """What this run tells, the same for every chat.

    A plain class, not a NamedTuple: every cron run imports this module, and
    building a NamedTuple class costs a tenth of a millisecond.
    """

    __slots__ = ("alerts", "silenced", "entries", "text", "silent", "alerts_text", "alerts_ring", "own",
                 "previews")

    def __init__(self, alerts, silenced, entries, text, silent, alerts_text, alerts_ring, own, previews):
        self.alerts = alerts            # the alerts told this run (silenced ones left out)
        self.silenced = silenced        # (alert, silence) pairs: evaluated and logged, never sent
        self.entries = entries          # the alert state after this run, nothing marked told yet
        self.text = text                # this run's one message: the command's own text, then the alerts
        self.silent = silent            # the message does not ring (no part of it rings)
        self.alerts_text = alerts_text  # the alerts' part of `text`
        self.alerts_ring = alerts_ring  # the alerts' part rings
        self.own = own                  # the command's own (text, silent[, check ids it shows]), if any
        self.previews = previews        # for a dry run: [{chat_id, text}] as it would be sent


def tell(config: dict, command: str, results, kinds_run, host: str, entries: dict, silences: list,
         now: float, message: tuple | None = None) -> Told:
    """Evaluate this run's alerts against the stored `entries` and the active `silences`.

    `message` is (text, silent[, check ids]): the command's own text (the daily
    report), which opens the message, ahead of the alerts of checks it does not
    already show. The message rings unless every part of it is silent.
    """
    rules = config["alerts"]
    alerts, entries = alert_state.evaluate(entries, results, command, kinds_run, now,
                                           rules["alert_after"], rules["repeat_interval"],
                                           rules["send_resolved"], rules["flap_window"])
    to_send, silenced = [], []
    for alert in alerts:
        silence = matching(silences, alert.check_id)
        if silence:
            silenced.append((alert, silence))
        else:
            to_send.append(alert)
    parts, silent = ([message[0]], message[1]) if message else ([], True)
    # A third item names the checks the text itself shows (the report's own warnings):
    # their alerts are told by it, not repeated under it; a RESOLVED still is.
    shows = set(message[2]) if message and len(message) > 2 else set()
    listed = [a for a in to_send if a.check_id not in shows or a.status == alert_state.RESOLVED]
    alerts_text, alerts_ring = None, False
    if to_send:
        from monitor.alerts import messages  # only a run with something to tell composes

        alerts_ring = messages.rings(to_send)
        if listed:
            alerts_text = messages.compose(listed, host, config["environment"], now)
            parts.append(alerts_text)
        silent = silent and not alerts_ring
    text = "\n\n".join(parts) or None
    chats = (config.get("telegram") or {}).get("chat_ids") or [None]
    previews = [{"chat_id": chat, "text": text} for chat in chats] if text else []
    return Told(to_send, silenced, entries, text, silent, alerts_text, alerts_ring, message, previews)


class Held:
    """What the outbox holds before delivery, and what the run saves."""

    __slots__ = ("outbox", "dropped", "fresh", "entries", "deliver", "save_outbox", "off")

    def __init__(self, outbox, entries, *, dropped=(), fresh=frozenset(), deliver=False, save_outbox=False,
                 off=None):
        self.outbox = outbox            # what waited (expired ones out), then this run's messages for each chat
        self.entries = entries          # the alert state to save: this run's alerts marked told once queued
        self.dropped = list(dropped)    # waited longer than telegram.outbox_max_age: dropped with an ERROR record
        self.fresh = set(fresh)         # the ids of this run's messages
        self.deliver = deliver          # there are chats: deliver `outbox` (with a bot token) or keep it
        self.save_outbox = save_outbox  # the outbox file is rewritten with what is left (not under --no-notify)
        self.off = off                  # why notifications are off (logged), or None


def hold(told: Told, config: dict, waiting: list, migrations: dict, now: float, no_notify: bool = False,
         new_id=None) -> Held:
    """Queue this run's message for every chat behind what the outbox already holds.

    An alert counts as told once it sits in the outbox (delivered later if Telegram
    does not take it now), so its entry is marked here. Under --no-notify what waits
    is reported, neither sent nor rewritten. `new_id` makes the outbox ids (random by
    default); `waiting` is what the outbox holds, `migrations` maps a chat id to the
    one Telegram moved it to.
    """
    tg = config.get("telegram")
    if no_notify:
        return Held(waiting, told.entries)
    if not tg or not tg["chat_ids"]:
        off = "no [telegram] section" if not tg else "telegram.chat_ids is empty"
        return Held(waiting, told.entries, save_outbox=bool(tg), off=off)
    from monitor.alerts import outbox

    queue, fresh = list(waiting), set()
    pieces = _pieces(told)
    photo = told.own[3] if told.own and len(told.own) > 3 else None  # (png, caption): the report's chart
    for chat in tg["chat_ids"]:
        if photo and pieces:  # ahead of the report's text, silent like it and in its class of delivery order
            item = outbox.new_message(migrations.get(chat, chat), photo[1], told.own[1], now, pieces[-1][2],
                                      message_id=new_id() if new_id else None)
            item["png"] = photo[0]
            fresh.add(item["id"])
            queue.append(item)
        for chunk, chunk_silent, chunk_about in pieces:
            item = outbox.new_message(migrations.get(chat, chat), chunk, chunk_silent, now, chunk_about,
                                       message_id=new_id() if new_id else None)
            fresh.add(item["id"])
            queue.append(item)  # behind anything older for the same chat
    queue, dropped = expire(queue, now, tg["outbox_max_age"])
    told_ids = {alert.check_id for alert in told.alerts}
    entries = {check: dict(entry) if check in told_ids else entry for check, entry in told.entries.items()}
    alert_state.mark_notified(entries, told.alerts, now)
    return Held(queue, entries, dropped=dropped, fresh=fresh, deliver=True, save_outbox=True)


def _pieces(told: Told) -> list[tuple[str, bool, list]]:
    """This run's outbox items for one chat: (text under 4096, silent, alerts it tells).

    One message when it fits; otherwise the alerts and the command's own text (a long
    daily report) are split apart, so the alerts can be delivered first.
    """
    from monitor.alerts.telegram import split_message

    if not told.text:
        return []
    about = [[a.check_id, a.status] for a in told.alerts]
    chunks = split_message(told.text)
    if len(chunks) == 1 or not (told.own and told.alerts_text):
        return [(chunk, told.silent, about) for chunk in chunks]
    return ([(chunk, not told.alerts_ring, about) for chunk in split_message(told.alerts_text)]
            + [(chunk, told.own[1], []) for chunk in split_message(told.own[0])])


def expire(queue: list[dict], now: float, max_age: float) -> tuple[list[dict], list[dict]]:
    """Split `queue` into (kept, dropped): dropped waited longer than `telegram.outbox_max_age`."""
    kept, dropped = [], []
    for message in queue:
        (dropped if now - message.get("created", now) > max_age else kept).append(message)
    return kept, dropped


def delivery_order(queue: list[dict]) -> list[dict]:
    """Alerts (critical, warning, could not check, and their RESOLVED, so they stay in
    order) go before info and report texts; oldest first within each (a stable sort)."""
    return sorted(queue, key=lambda message: 0 if message.get("alerts") else 1)
