"""Messages of a run that could not take the notify lock, kept for the next run that can.

A run that waited out the notify lock skips its notification step. Most commands tell
the same again five minutes later, but the daily report is told once a day: its
messages (what the outbox would have held, the chart's bytes in base64) are written
whole, without the lock, as `state/pending-<ms>-<random>.json` (a new name each, written
atomically: no other run reads half of one), and the next run that holds the lock puts
them in its outbox and removes the files once that outbox is saved.
"""

import base64
import logging
import os
import time

from monitor import state

log = logging.getLogger("monitor")
PREFIX = "pending-"
MAX_FILES = 31  # a month of daily reports; more waiting means no run delivers at all


def keep(folder: str, messages: list[dict]) -> str:
    """Write `messages` (outbox messages, a photo's bytes in "png") as one pending file; return its path."""
    items = [{**m, "png": base64.b64encode(m["png"]).decode()} if "png" in m else m for m in messages]
    path = os.path.join(folder, f"{PREFIX}{int(time.time() * 1000):015d}-{os.urandom(4).hex()}.json")
    state.write_json(path, {"messages": items})
    return path


def take(folder: str) -> tuple[list[dict], list[str]]:
    """The messages the pending files hold, oldest file first, and those files (for `done`)."""
    from monitor.alerts.outbox import _is_message

    try:
        names = sorted(n for n in os.listdir(folder) if n.startswith(PREFIX) and n.endswith(".json"))
    except OSError:
        return [], []
    messages, paths = [], []
    for name in names[:MAX_FILES]:
        path = os.path.join(folder, name)
        try:
            data = state.read_json(path, default={})
        except (state.StateError, OSError) as exc:  # a planted link or FIFO: left where it is
            log.warning("pending messages %s not read: %s", path, getattr(exc, "strerror", None) or exc,
                        extra={"event": "pending_unreadable"})
            continue
        items = data.get("messages") if isinstance(data.get("messages"), list) else []
        for item in items:
            if not _is_message(item) or not isinstance(item.get("png", ""), str):
                continue
            if "png" in item:
                try:
                    item["png"] = base64.b64decode(item["png"], validate=True)
                except ValueError:
                    continue
            messages.append(item)
        paths.append(path)
    return messages, paths


def done(paths: list[str]) -> None:
    """Remove pending files whose messages are in a saved outbox now."""
    for path in paths:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:  # their messages would be queued twice: say so once
            log.warning("pending messages %s not removed: %s", path, exc.strerror,
                        extra={"event": "pending_unreadable"})
