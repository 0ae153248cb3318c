"""What the bot says: the /help list, /status, /silences, and the buttons under an alert.

Pure text from plain data (alert entries, silences, the times each command last ran):
HTML, every interpolated value escaped, so `telegram.split_message` keeps each reply
under 4096 characters.
"""

from datetime import datetime

from monitor.results import CRITICAL, OK, SEVERITY, UNKNOWN, WARNING
from monitor.text import ID_CHARS, clip, html_escape
from monitor.units import format_duration



def e(text) -> str:
    """Text between tags, HTML-escaped."""
    return html_escape(text)

# (command, its arguments, what it does): the /help text and `monitor telegram setup`'s menu.
COMMANDS = (
    ("status", "", "every check's last status, worst first"),
    ("ack", "CHECK", "stop the reminders until it changes or resolves"),
    ("mute", "PATTERN DURATION [reason]", "silence matching checks, e.g. /mute disk:* 2h full disk"),
    ("unmute", "ID", "end a silence"),
    ("silences", "", "the active silences"),
    ("report", "", "the last daily report again"),
    ("help", "", "this list"),
)
ICONS = {CRITICAL: "🚨", WARNING: "⚠️", UNKNOWN: "❔"}
MAX_ROWS = 5        # alerts with buttons under one message; the others: /ack, /mute
CALLBACK_BYTES = 64  # Telegram's limit on callback_data
MUTES = {"1h": 3600, "24h": 86400}
STATUS_LINES = 40     # problem lines in /status (400 criticals would be 130 messages); the rest counted
STATUS_CHARS = 6000   # and at most this much of them: the whole reply fits in two messages


def when(ts: float) -> str:
    """A time as the chat reads it; a hand-edited state's absurd time (1e300) as "far future"."""
    try:
        return datetime.fromtimestamp(ts).astimezone().strftime("%Y-%m-%d %H:%M %Z")
    except (OverflowError, ValueError, OSError):
        return "far future" if ts > 0 else "far past" if ts < 0 else "an unknown time"


def _age(seconds: float) -> str:
    return format_duration(seconds) if seconds < 100 * 365 * 86400 else "ages"


def help_text() -> str:
    lines = ["<b>monitor</b> answers these (within one cron period):"]
    lines += [f"/{name}{' ' + e(args) if args else ''} — {e(what)}" for name, args, what in COMMANDS]
    return "\n".join(lines)


def status_text(entries: dict, last_runs: dict, host: str, environment: str, now: float) -> str:
    """Every check's last status, worst first, ok ones as a count; when each command last ran."""
    problems, ok = [], 0
    for check, entry in entries.items():
        if not isinstance(entry, dict):
            continue
        status = entry.get("status")
        if status == OK:
            ok += 1
        elif status in SEVERITY:
            problems.append((-SEVERITY[status], check, entry))
    lines = [f"<b>📋 {e(clip(host))}</b> ({e(clip(environment))}) · {e(when(now))}"]
    shown, size = 0, 0
    for _, check, entry in sorted(problems, key=lambda p: (p[0], p[1])):
        status = entry["status"]
        since = entry.get("since")
        began = f" since {e(when(since))} ({e(_age(max(0.0, now - since)))})" \
            if isinstance(since, (int, float)) else ""
        block = [f"{ICONS[status]} <b>{e(clip(check, ID_CHARS))}</b> {e(status)}{began}"]
        if entry.get("message"):
            block.append(f"    {e(clip(entry['message'], 200))}")
        ack = entry.get("ack")
        if isinstance(ack, dict) and isinstance(ack.get("at"), (int, float)):
            block.append(f"    acked by {e(clip(ack.get('by', '?')))} at {e(when(ack['at']))}")
        size += sum(len(line) + 1 for line in block)
        if shown and (len(lines) - 1 + len(block) > STATUS_LINES or size > STATUS_CHARS):
            lines.append(f"… and {len(problems) - shown} more (monitor health)")
            break
        lines += block
        shown += 1
    lines.append(f"✅ {ok} check{'s' if ok != 1 else ''} ok" if ok or not problems else "")
    if last_runs:
        ran = " · ".join(f"{e(name)} {e(when(ts))}" if ts else f"{e(name)} never"
                         for name, ts in last_runs.items())
        lines.append(f"<i>last runs: {ran}</i>")
    return "\n".join(line for line in lines if line)


def silences_text(active: list, now: float) -> str:
    if not active:
        return "no active silences"
    lines = ["<b>active silences</b>"]
    for n, s in enumerate(active):
        if n == STATUS_LINES:
            lines.append(f"… and {len(active) - n} more (monitor silence list)")
            break
        author = f" by {e(clip(s['author']))}" if s.get("author") else ""
        reason = f" — {e(clip(s['reason'], 200))}" if s.get("reason") else ""
        lines.append(f"<code>{e(clip(s.get('id', '?')))}</code> {e(clip(s['pattern'], ID_CHARS))} until "
                     f"{e(when(s['until']))}{author}{reason}")
    return "\n".join(lines)


def reference(check: str) -> str:
    """The check as callback_data names it: the id, or "#" and a hash when too long for 64 bytes."""
    if len(f"24h {check}".encode()) <= CALLBACK_BYTES and not check.startswith("#"):
        return check
    import hashlib

    return "#" + hashlib.sha256(check.encode("utf-8", "surrogateescape")).hexdigest()[:20]


def resolve(ref: str, checks) -> str | None:
    """The check `ref` (from callback_data) names, among `checks`."""
    if not ref.startswith("#"):
        return ref if ref in checks else None
    return next((c for c in checks if reference(c) == ref), None)


def keyboard(alerts) -> dict | None:
    """Ack / Mute 1h / Mute 24h under a message telling critical or warning alerts, one row each."""
    targets = [check for check, status in alerts if status in (CRITICAL, WARNING, UNKNOWN)][:MAX_ROWS]
    rows = []
    for check in targets:
        ref = reference(check)
        label = "" if len(targets) == 1 else f" {clip(check, 24)}"
        rows.append([{"text": f"Ack{label}", "callback_data": f"ack {ref}"},
                     {"text": "Mute 1h", "callback_data": f"1h {ref}"},
                     {"text": "Mute 24h", "callback_data": f"24h {ref}"}])
    return {"inline_keyboard": rows} if rows else None


def done_keyboard(current, pressed: str, said: str) -> dict:
    """The message's keyboard with the pressed button's row replaced by what was done.

    `current` is the keyboard the press came with (outside data: used only when it
    has our shape, else rebuilt as the one row).
    """
    done = [{"text": clip(said, 60), "callback_data": "done"}]
    rows = current.get("inline_keyboard") if isinstance(current, dict) else None
    if not (isinstance(rows, list) and 0 < len(rows) <= MAX_ROWS and all(
            isinstance(row, list) and 0 < len(row) <= 3 and all(
                isinstance(b, dict) and isinstance(b.get("text"), str) and isinstance(b.get("callback_data"), str)
                and len(b["text"]) <= 80 and len(b["callback_data"].encode()) <= CALLBACK_BYTES for b in row)
            for row in rows)):
        return {"inline_keyboard": [done]}
    ref = pressed.split(" ", 1)[-1]
    out = []
    for row in rows:
        hit = any(b["callback_data"].split(" ", 1)[-1] == ref and b["callback_data"] != "done" for b in row)
        out.append(done if hit else [{"text": b["text"], "callback_data": b["callback_data"]} for b in row])
    return {"inline_keyboard": out}
