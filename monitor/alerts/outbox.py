"""The outbox: messages Telegram has not accepted yet, kept until it does.

`state/outbox.jsonl`, one message per line, oldest first, rewritten atomically. A
message leaves only when Telegram answered 200, or after `outbox_max_age` with an
ERROR record naming what was dropped. A line that cannot be parsed is kept aside in
`outbox.jsonl.corrupt-<timestamp>` rather than silently lost.
"""

import json
import logging
import os
from datetime import datetime

from monitor import state
from monitor.results import is_number

log = logging.getLogger("monitor")
FILENAME = "outbox.jsonl"


def path(folder: str) -> str:
    return os.path.join(folder, FILENAME)


def load(folder: str) -> list[dict]:
    try:
        raw = state.read_file(path(folder))  # never through a planted link, never a FIFO
    except FileNotFoundError:
        return []
    messages, bad = [], []
    for line in raw.splitlines():
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            if not _is_message(item):
                raise ValueError("not a message")
            if item.get("photo") is not None:
                item = _load_photo(folder, item)
            messages.append(item)
        except ValueError:
            bad.append(line)
    if bad:
        aside = f"{path(folder)}.corrupt-{datetime.now().strftime('%Y%m%dT%H%M%S')}"
        state.atomic_write(aside, b"\n".join(bad) + b"\n")
        log.warning("outbox had %d unreadable line(s); kept in %s", len(bad), aside,
                    extra={"event": "outbox_corrupt"})
    return messages


def _is_message(item) -> bool:
    """A line the delivery loop can use as is (a hand-edited one may not be)."""
    return (isinstance(item, dict) and isinstance(item.get("text"), str)
            and isinstance(item.get("chat_id"), (str, int)) and not isinstance(item.get("chat_id"), bool)
            and is_number(item.get("created", 0)) and (item.get("not_before") is None or is_number(item["not_before"]))
            and is_number(item.get("attempts", 0)) and isinstance(item.get("alerts", []), list))


def count(folder: str) -> int:
    """How many messages wait, without touching the file (dry runs change nothing)."""
    try:
        return sum(1 for line in state.read_file(path(folder)).splitlines() if line.strip())
    except OSError:
        return 0


def save(folder: str, messages: list[dict]) -> None:
    messages = _keep_photos(folder, messages)
    data = "".join(json.dumps(m, ensure_ascii=False, separators=(",", ":")) + "\n" for m in messages)
    if not messages and not os.path.lexists(path(folder)):
        return
    state.atomic_write(path(folder), data.encode())


def new_message(chat_id: str, text: str, silent: bool, now: float, alerts=(), message_id: str | None = None) -> dict:
    return {"id": message_id or os.urandom(6).hex(), "chat_id": str(chat_id), "text": text,
            "disable_notification": bool(silent), "created": now, "not_before": None,
            "attempts": 0, "last_error": None, "alerts": list(alerts)}


def describe(message: dict) -> str:
    """A one-line description for logs: what the dropped message was about."""
    first = message["text"].split("\n", 1)[0]
    about = ", ".join(a if isinstance(a, str) else "/".join(map(str, a)) for a in message.get("alerts", []))
    return f"message {message.get('id')} to chat {message['chat_id']}: {first[:80]}" + (f" [{about}]" if about else "")


# --- photos (the daily report's chart) -----------------------------------------------------
# A photo waits as its own file beside the outbox, `outbox-photo-<id>.png`, written
# atomically with the line that names it; in memory the message holds its bytes
# ("png"). At most MAX_PHOTO bytes are kept or read back.
PHOTO_PREFIX = "outbox-photo-"
MAX_PHOTO = 1024 * 1024


def _photo_name(message: dict) -> str:
    return f"{PHOTO_PREFIX}{''.join(c for c in str(message.get('id')) if c.isalnum())[:32]}.png"


def _load_photo(folder: str, item: dict) -> dict:
    """The message with its photo's bytes; a photo file gone or over the cap: ValueError (kept aside)."""
    name = item["photo"]
    if not isinstance(name, str) or name != os.path.basename(name) or not name.startswith(PHOTO_PREFIX):
        raise ValueError("not a photo of the outbox")
    try:
        png = state.read_file(os.path.join(folder, name), MAX_PHOTO + 1)
    except OSError:
        raise ValueError(f"photo {name} is missing") from None
    if len(png) > MAX_PHOTO:
        raise ValueError(f"photo {name} is over the cap")
    return {**item, "png": png}


def _keep_photos(folder: str, messages: list[dict]) -> list[dict]:
    """Write each waiting photo's file (once), drop the files no message names; return the lines to save."""
    out, named = [], set()
    for message in messages:
        if "png" not in message:
            out.append(message)
            continue
        png, line = message["png"], {k: v for k, v in message.items() if k != "png"}
        if len(png) > MAX_PHOTO:
            log.error("not kept: %s: its photo is over %d KB", describe(message), MAX_PHOTO // 1024,
                      extra={"event": "outbox_dropped", "message_id": message.get("id")})
            continue
        line["photo"] = _photo_name(message)
        photo_path = os.path.join(folder, line["photo"])
        if not os.path.isfile(photo_path):
            state.atomic_write(photo_path, png)
        named.add(line["photo"])
        out.append(line)
    try:
        for name in os.listdir(folder):
            if name.startswith(PHOTO_PREFIX) and name.endswith(".png") and name not in named:
                os.unlink(os.path.join(folder, name))
    except OSError:
        pass
    return out
