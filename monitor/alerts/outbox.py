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
