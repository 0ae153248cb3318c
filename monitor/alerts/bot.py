"""Answering back: what the operators said in the chats since the last run, read and handled.

No daemon: each run's notification step (under the notify lock) calls `getUpdates`
once (again with limit=1 when the answer is over UPDATES_BYTES; getMe at most hourly),
with `offset` = the last handled `update_id` + 1 kept in the alert state
(`alerts.json`, key "telegram"), and not at all for a while after Telegram did not
answer. `Inbox.read` fetches at most MAX_UPDATES updates;
`Inbox.handle` applies /ack (to the alert entries, saved with the offset in one
write), /mute and /unmute (silences.json, a /mute's silence id made from its
update_id, so handling an update again after a crash adds nothing) and button presses,
before this run's alerts are planned; the replies are rendered after it (/status
shows this run) and queued in the outbox behind the alerts, each with an id made from
its update. The offset is saved with the outbox holding the replies before any is
sent (notify.py), and Telegram drops an update once a later call asks for a higher
offset, so an update is confirmed only by the next run, after this one saved its effects.

Who may speak: chats in `telegram.chat_ids` (or the supergroups Telegram moved them
to), and outside private chats only `telegram.allowed_users` when set; in a channel
(whose readers are anyone) nobody when it is not set. Anyone else is ignored,
logged once per sender at WARNING, never answered (a button press gets "not
allowed"). Everything in an update is outside input: `Incoming` makes it printable
and bounded where it enters.
"""

import logging
import sys
import time

from monitor import redact
from monitor.alerts import bot_text, silences
from monitor.alerts import state as alert_state
from monitor.results import is_number
from monitor.state import StateError
from monitor.text import ID_CHARS, clip, printable
from monitor.units import format_duration, parse_duration

log = logging.getLogger("monitor")

MAX_UPDATES = 100            # handled per run; the rest wait for the next run
UPDATES_BYTES = 1024 * 1024  # 100 updates of a few KB each; more is not read
MAX_REPLIES = 10             # per run: a flood of commands gets its effects, not 100 answers
MAX_STRANGERS = 200          # senders remembered as already logged
TEXT_CHARS = 1024            # of a command's text; a command is a line
QUIET_AFTER_UNREACHABLE = 300  # s: updates are not read this long after a call found Telegram unreachable
CONFLICT_SAID_EVERY = 86400    # s: another program reading this bot's updates is said on stderr once a day
MIN_CALL = 0.05              # s: less time than this left is no time for a Bot API call


class Incoming:
    """One update, as far as the bot reads it: printable, bounded, typed. Raise ValueError if malformed."""

    __slots__ = ("update_id", "chat_id", "chat_type", "chat_name", "chat_username", "user_id", "username", "who", "text",
                 "callback_id", "data", "message_id", "keyboard")

    def __init__(self, raw):
        if not isinstance(raw, dict) or not isinstance(raw.get("update_id"), int) or isinstance(raw["update_id"], bool):
            raise ValueError("no update_id")
        self.update_id = raw["update_id"]
        callback = raw.get("callback_query")
        if isinstance(callback, dict):
            message, sender = callback.get("message"), callback.get("from")
        else:
            message = raw.get("message")
            sender = message.get("from") if isinstance(message, dict) else None
        if not isinstance(message, dict) or not isinstance(message.get("chat"), dict):
            raise ValueError("no chat")
        chat = message["chat"]
        self.chat_id = _id(chat.get("id"))
        self.chat_type = clip(chat.get("type") or "", 20)
        self.chat_name = clip(chat.get("title") or chat.get("username") or chat.get("first_name") or "", 64)
        self.chat_username = clip(chat["username"], 64) if isinstance(chat.get("username"), str) else ""
        sender = sender if isinstance(sender, dict) else {}
        self.user_id = _id(sender.get("id")) if sender.get("id") is not None else ""
        self.username = clip(sender.get("username") or "", 64) if isinstance(sender.get("username"), str) else ""
        name = sender.get("first_name") if isinstance(sender.get("first_name"), str) else ""
        self.who = f"@{self.username}" if self.username else f"{clip(name, 32) or 'user'} ({self.user_id})"
        self.message_id = message.get("message_id") if isinstance(message.get("message_id"), int) else None
        if isinstance(callback, dict):
            self.callback_id = clip(callback.get("id") or "", 64)
            self.data = clip(callback.get("data"), 64) if isinstance(callback.get("data"), str) else ""
            self.keyboard = message.get("reply_markup")
            self.text = ""
        else:
            self.callback_id = self.data = self.keyboard = None
            text = message.get("text")
            self.text = printable(text[:TEXT_CHARS]) if isinstance(text, str) else ""


def _id(value) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).lstrip("-").isdigit():
        raise ValueError("not a numeric id")
    return str(value)[:24]


def parse_command(text: str) -> tuple[str, str] | None:
    """("status", "rest of the line") for "/status@MyBot rest"; None when not a command."""
    if not text.startswith("/"):
        return None
    word, _, rest = text.strip().partition(" ")
    name = word[1:].split("@", 1)[0].lower()
    return (name, rest.strip()) if name else None


def addressee(text: str) -> str | None:
    """"mybot" for "/status@MyBot ...": the bot a command names (a group may hold several); None if none."""
    if not text.startswith("/"):
        return None
    word = text.strip().split(" ", 1)[0]
    return word.partition("@")[2].lower() or None


class Inbox:
    """One run's conversation: read the updates, handle them, queue the replies, answer the presses."""

    def __init__(self, config: dict, folder: str, bot_state: dict, now: float, command: str,
                 migrations: dict | None = None):
        tg = config["telegram"]
        self.config, self.folder, self.now, self.command = config, folder, now, command
        self.state = dict(bot_state) if isinstance(bot_state, dict) else {}
        self.chats = {str(c).lower() for c in tg["chat_ids"]}
        self.chats |= {str(new) for old, new in (migrations or {}).items() if str(old).lower() in self.chats}
        self.users = {str(u).lower() for u in tg.get("allowed_users") or []}
        self.updates: list[Incoming] = []
        self.replies: list[tuple[str, str, object]] = []  # (chat, id, text or a function of the entries)
        self.presses: list[tuple] = []                    # (callback id, answer, chat, message id, keyboard)
        self.handled = 0

    # --- reading ----------------------------------------------------------------------------

    def read(self, client) -> None:
        """getUpdates from the kept offset; keep at most MAX_UPDATES. Never raises.

        Not read at all within QUIET_AFTER_UNREACHABLE of a call (this run's or the last
        ones', reads, sends or presses) that Telegram did not answer: the run's time is
        for its alerts, and the outbox's next send finds out whether Telegram is back."""
        if self.recently_unreachable():
            log.info("telegram: commands not read: Telegram did not answer %s ago",
                     format_duration(self.now - self.state["unreachable"]), extra={"event": "telegram_updates_skipped"})
            return
        offset = self.state.get("offset") if isinstance(self.state.get("offset"), int) else None
        payload = {"timeout": 0, "limit": MAX_UPDATES, "allowed_updates": ["message", "callback_query"]}
        if offset is not None:
            payload["offset"] = offset
        answer = client.call("getUpdates", payload, max_bytes=UPDATES_BYTES)
        if answer.too_big:  # one huge update among them: take them one by one
            answer = client.call("getUpdates", {**payload, "limit": 1}, max_bytes=UPDATES_BYTES)
        self.heard(answer)
        if answer.status == 409:
            self._conflict(answer)
            return
        if not answer.ok or not isinstance(answer.body.get("result"), list):
            log.warning("telegram: could not read commands: %s", answer.describe(),
                        extra={"event": "telegram_updates_failed"})
            return
        self.state.pop("webhook", None)
        if len(answer.body["result"]) >= MAX_UPDATES:
            log.warning("telegram: %d updates handled, more waiting: the rest in the next runs", MAX_UPDATES,
                        extra={"event": "telegram_updates_full"})
        bad, highest = 0, offset - 1 if offset is not None else None
        for raw in answer.body["result"][:MAX_UPDATES]:
            number = raw.get("update_id") if isinstance(raw, dict) else None
            if isinstance(number, int) and not isinstance(number, bool):
                if offset is not None and number < offset:
                    continue  # handled and saved already: Telegram sent it again
                highest = number if highest is None else max(highest, number)
            try:
                self.updates.append(Incoming(raw))
            except (ValueError, TypeError, AttributeError):
                bad += 1
        if bad:
            log.warning("telegram: %d update(s) could not be read and were skipped", bad,
                        extra={"event": "telegram_update_malformed"})
        if highest is not None:
            self.state["offset"] = highest + 1
        self._learn_name(client)

    def heard(self, answer) -> None:
        """Note whether Telegram answered a call (status 0: no answer at all)."""
        if answer.status == 0 and "unreachable" in (answer.error or ""):
            self.state["unreachable"] = self.now
        elif answer.status:
            self.state.pop("unreachable", None)

    def recently_unreachable(self) -> bool:
        at = self.state.get("unreachable")
        return is_number(at) and 0 <= self.now - at < QUIET_AFTER_UNREACHABLE

    def _conflict(self, answer) -> None:
        """A 409, in the words of its cause: a webhook, or another program reading the same bot."""
        description = printable(redact.scrub(str(answer.body.get("description") or "")))[:200]
        if "webhook" in description.lower():
            if not self.state.get("webhook"):
                problem = ("telegram: cannot read commands: the bot has a webhook set (409 Conflict); "
                           "remove it with https://api.telegram.org/bot<token>/deleteWebhook "
                           "(monitor reads updates with getUpdates, no webhook)")
                print(f"monitor {self.command}: {problem}", file=sys.stderr)
                log.error("%s", problem, extra={"event": "telegram_webhook_conflict"})
            self.state["webhook"] = True
            return
        # "Conflict: terminated by other getUpdates request": another host (or a bot
        # framework) polls with the same token, and each takes updates the other never sees.
        problem = (f"telegram: cannot read commands: another program reads this bot's updates "
                   f"({description or '409 Conflict'}); hosts sharing one bot token take each other's "
                   f"commands: give each host its own bot (or send the alerts through Alertmanager)")
        said = self.state.get("conflict")
        if is_number(said) and 0 <= self.now - said < CONFLICT_SAID_EVERY:
            log.info("%s", problem, extra={"event": "telegram_updates_conflict"})
            return
        print(f"monitor {self.command}: {problem}", file=sys.stderr)
        log.error("%s", problem, extra={"event": "telegram_updates_conflict"})
        self.state["conflict"] = self.now

    def _learn_name(self, client) -> None:
        """Our bot's username (getMe), asked when a command names a bot that is not the one kept:
        the first time, then at most hourly (a rename). Unknown, every command counts as ours."""
        named = {addressee(update.text) for update in self.updates} - {None, self._me()}
        asked = self.state.get("me_asked")
        if not named or self._me() and is_number(asked) and 0 <= self.now - asked < 3600:
            return
        self.state["me_asked"] = self.now
        answer = client.call("getMe", {})
        self.heard(answer)
        me = answer.body.get("result") if answer.ok and isinstance(answer.body, dict) else None
        if isinstance(me, dict) and isinstance(me.get("username"), str) and me["username"]:
            self.state["me"] = clip(me["username"], 64).lower()

    def _me(self) -> str | None:
        me = self.state.get("me")
        return me if isinstance(me, str) and me else None

    # --- handling -------------------------------------------------------------------------------

    def allowed(self, update: Incoming) -> bool:
        # chat_ids may name a public group or channel by its @username
        in_chat = update.chat_id in self.chats or bool(update.chat_username) and \
            f"@{update.chat_username}".lower() in self.chats
        if not in_chat:
            return False
        if update.chat_type == "private":  # the chat is the person: chat_ids names them
            return True
        if self.users:  # a group, a supergroup, a channel (its subscribers press buttons too)
            return update.user_id in self.users or f"@{update.username}".lower() in self.users
        return update.chat_type != "channel"  # a channel's readers are anyone: only named users act

    def handle(self, entries: dict, active: list) -> None:
        """Apply every update to `entries` (acks) and `active` (silences, saved at once); never raises."""
        for update in self.updates:
            try:
                self._handle(update, entries, active)
            except Exception as exc:  # noqa: BLE001 - one odd update must not cost the run's alerts
                log.warning("telegram: update %s could not be handled: %s", update.update_id,
                            clip(redact.scrub(f"{type(exc).__name__}: {exc}"), 200),
                            extra={"event": "telegram_update_failed"})
                self._failed(update, exc)
        if self.handled:
            log.info("telegram: %d command(s) and button press(es) handled", self.handled,
                     extra={"event": "telegram_commands", "count": self.handled})

    def _handle(self, update: Incoming, entries: dict, active: list) -> None:
        if not self.allowed(update):
            self._stranger(update)
            if update.callback_id:
                self.presses.append((update.callback_id, "not allowed", None, None, None))
            return
        if update.callback_id is not None:
            self._press(update, entries, active)
            return
        command = parse_command(update.text)
        if command is None:
            return  # people talk in groups: only commands are for the bot
        to = addressee(update.text)
        if to and self._me() and to != self._me():
            return  # "/status@OtherBot": another bot's, in a group that has several
        self.handled += 1
        name, rest = command
        reply = self._command(name, rest, update, entries, active)
        log.info("telegram: /%s from %s in chat %s", clip(name, 32), update.who, update.chat_id,
                 extra={"event": "telegram_command", "command": clip(name, 32), "user": update.user_id,
                        "chat": update.chat_id})
        if len(self.replies) < MAX_REPLIES:
            self.replies.append((update.chat_id, f"r{update.update_id}", reply))
        elif len(self.replies) == MAX_REPLIES:
            log.warning("telegram: more than %d commands in one run: the rest are done but not answered",
                        MAX_REPLIES, extra={"event": "telegram_replies_capped"})
            self.replies.append((None, "", ""))

    def _failed(self, update: Incoming, exc: Exception) -> None:
        """Tell the sender that what they asked for was not done (a full disk, say): a short
        reason, never the exception's text (it may hold anything)."""
        if isinstance(exc, OSError) and exc.strerror:
            reason = exc.strerror
        elif isinstance(exc, StateError):
            reason = "the state folder cannot be used"
        else:
            reason = type(exc).__name__
        reason = clip(redact.scrub(reason), 100)
        if not self.allowed(update):
            return
        if update.callback_id:
            if not any(press[0] == update.callback_id for press in self.presses):
                self.presses.append((update.callback_id, f"failed: {reason}", None, None, None))
            return
        command = parse_command(update.text)
        reply_id = f"r{update.update_id}"
        if command is None or any(reply[1] == reply_id for reply in self.replies):
            return
        if len(self.replies) < MAX_REPLIES:
            self.replies.append((update.chat_id, reply_id,
                                 f"⚠️ /{bot_text.e(clip(command[0], 32))} failed: {bot_text.e(reason)}"))

    def _stranger(self, update: Incoming) -> None:
        key = f"{update.chat_id}/{update.user_id}"
        seen = self.state.get("strangers") if isinstance(self.state.get("strangers"), list) else []
        if key in seen:
            return
        log.warning("telegram: ignored an update from a sender not allowed: chat %s (%s %s), user %s %s "
                    "(telegram.chat_ids, telegram.allowed_users)", update.chat_id, update.chat_type,
                    update.chat_name, update.user_id, update.who,
                    extra={"event": "telegram_stranger", "chat": update.chat_id, "user": update.user_id})
        self.state["strangers"] = (seen + [key])[-MAX_STRANGERS:]

    def _command(self, name: str, rest: str, update: Incoming, entries: dict, active: list):
        if name == "status":
            return "status"  # rendered after this run's checks are in the entries
        if name == "ack":
            return self._ack(clip(rest, ID_CHARS), update, entries) if rest else "usage: /ack CHECK"
        if name == "mute":
            return self._mute(rest, update, active)
        if name == "unmute":
            return self._unmute(rest.split(" ", 1)[0], active) if rest else "usage: /unmute ID (see /silences)"
        if name == "silences":
            return bot_text.silences_text(active, self.now)
        if name == "report":
            return self._report()
        return bot_text.help_text()

    def _ack(self, check: str, update: Incoming, entries: dict) -> str:
        e = bot_text.e
        why = alert_state.acknowledge(entries, check, update.who, self.now)
        if why:
            return f"{e(check)}: {e(why)}"
        ack = entries[check]["ack"]
        log.info("%s acked by %s", check, ack["by"], extra={"event": "alert_acked", "check": check,
                                                              "user": update.user_id})
        return (f"<b>{e(check)}</b> ({e(ack['status'])}) acked by {e(ack['by'])}: no reminders until it "
                "changes severity or resolves")

    def _mute(self, rest: str, update: Incoming, active: list, seconds: float | None = None,
              silence_id: str | None = None) -> str:
        e = bot_text.e
        words = rest.split(" ", 2)
        if seconds is None:
            if len(words) < 2:
                return "usage: /mute PATTERN DURATION [reason], e.g. /mute disk:* 2h full disk"
            try:
                seconds = parse_duration(words[1])
            except ValueError as exc:
                return e(str(exc))
            problem = silences.duration_problem(seconds)
            if problem:
                return e(problem)
        pattern = clip(words[0], ID_CHARS)
        reason = clip(words[2], 200) if len(words) > 2 else ""
        silence = silences.add(self.folder, pattern, seconds, reason, self.now, author=update.who,
                               silence_id=silence_id or f"tg{update.update_id}")
        if not any(s.get("id") == silence["id"] for s in active):
            active.append(silence)
        log.info("silenced %s for %gs by %s: %s", pattern, seconds, update.who, reason or "no reason",
                 extra={"event": "silence_added", "silence": silence["id"], "user": update.user_id})
        return (f"muted <b>{e(pattern)}</b> until {e(bot_text.when(silence['until']))} "
                f"[id <code>{e(silence['id'])}</code>]")

    def _unmute(self, silence_id: str, active: list) -> str:
        removed = silences.remove(self.folder, silence_id, self.now)
        active[:] = [s for s in active if s.get("id") != silence_id]
        return f"removed silence {bot_text.e(clip(silence_id))}" if removed else \
            f"no active silence with id {bot_text.e(clip(silence_id))} (see /silences)"

    def _report(self) -> str:
        from monitor import state

        try:
            kept = state.read_json(report_path(self.folder), default={})
        except (state.StateError, OSError):
            kept = {}
        if not isinstance(kept.get("text"), str):
            return "no daily report was sent yet"
        return kept["text"]

    def _press(self, update: Incoming, entries: dict, active: list) -> None:
        self.handled += 1
        action, _, ref = update.data.partition(" ")
        if action == "done" or not ref:
            self.presses.append((update.callback_id, "already done", None, None, None))
            return
        check = bot_text.resolve(ref, entries)
        if check is None:
            self.presses.append((update.callback_id, "that check is gone", None, None, None))
            return
        if action == "ack":
            why = alert_state.acknowledge(entries, check, update.who, self.now)
            if why:  # e.g. ok again since the alert: the keyboard stays as it is
                self.presses.append((update.callback_id, clip(f"{check}: {why}", 190), None, None, None))
                return
            said = f"acked by {update.who}"
            log.info("%s acked by %s", check, update.who,
                     extra={"event": "alert_acked", "check": check, "user": update.user_id})
        elif action in bot_text.MUTES:
            pattern = "".join(f"[{c}]" if c in "*?[" else c for c in check)  # this check alone
            self._mute(pattern, update, active, bot_text.MUTES[action], f"tg{update.update_id}")
            said = f"muted {action} by {update.who}"
        else:
            self.presses.append((update.callback_id, "unknown button", None, None, None))
            return
        keyboard = bot_text.done_keyboard(update.keyboard, update.data, f"✓ {clip(check, 24)} {said}")
        self.presses.append((update.callback_id, clip(said, 190), update.chat_id, update.message_id, keyboard))

    # --- after the alerts -------------------------------------------------------------------------

    def reply_messages(self, entries: dict, host: str, last_runs: dict, new_message, queued: set) -> list[dict]:
        """The replies as outbox messages (ids from their updates; those already queued left out)."""
        from monitor.alerts.telegram import split_message

        out = []
        for chat, reply_id, reply in self.replies:
            if chat is None:
                continue
            if reply == "status":
                try:
                    reply = bot_text.status_text(entries, last_runs, host, self.config["environment"], self.now)
                except Exception as exc:  # noqa: BLE001 - an odd state must not cost the run's alerts
                    log.warning("telegram: /status could not be written: %s", clip(f"{type(exc).__name__}: {exc}", 200),
                                extra={"event": "telegram_update_failed"})
                    reply = "⚠️ /status could not be written this time; the log says why."
            for i, chunk in enumerate(split_message(reply)):
                message_id = f"{reply_id}-{i}"
                if message_id not in queued:
                    out.append(new_message(chat, chunk, True, self.now, (), message_id=message_id))
        return out

    def answer_presses(self, client, seconds: float, monotonic=time.monotonic) -> None:
        """answerCallbackQuery for every press, then its edited keyboard, all within `seconds`
        (telegram.timeout); failures are logged, not retried. A press whose answer failed
        keeps its keyboard: the buttons say what was done only when the presser was told."""
        deadline = monotonic() + seconds
        for n, (callback_id, text, chat, message_id, keyboard) in enumerate(self.presses):
            left = deadline - monotonic()
            if left < MIN_CALL:
                log.info("telegram: %d button press(es) not answered: no time left (telegram.timeout %gs)",
                         len(self.presses) - n, seconds, extra={"event": "telegram_press_unanswered"})
                break
            answer = client.call("answerCallbackQuery", {"callback_query_id": callback_id, "text": text},
                                 timeout=left)
            left = deadline - monotonic()
            if answer.ok and keyboard is not None and message_id is not None and left >= MIN_CALL:
                answer = client.call("editMessageReplyMarkup", {"chat_id": chat, "message_id": message_id,
                                                                "reply_markup": keyboard}, timeout=left)
            if not answer.ok:  # a press answered minutes later is "query is too old": harmless
                log.info("telegram: could not answer a button press: %s", answer.describe(),
                         extra={"event": "telegram_press_unanswered"})
            if answer.status == 0:
                break  # Telegram does not answer: the other presses would each wait out the timeout


REPORT_FILE = "last-report.json"


def report_path(folder: str) -> str:
    import os

    return os.path.join(folder, REPORT_FILE)


def last_runs(folder: str, command: str, now: float) -> dict:
    """When each job last ran (its lock file's mtime), this run's command at `now`."""
    import os

    from monitor.jobs import JOBS

    runs = {}
    for job in JOBS.values():
        try:
            runs[job.name] = now if job.name == command else os.stat(os.path.join(folder, f"{job.lock}.lock")).st_mtime
        except OSError:
            runs[job.name] = None
    return runs
