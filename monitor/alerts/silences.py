"""Silences: glob patterns on check ids whose alerts are evaluated and logged, not sent.

Kept in `state/silences.json` as a list of {id, pattern, until, reason, created[, author]}.
Expired silences are removed whenever the file is read for a run. A silence made from
Telegram (`/mute`, the Mute buttons) names its author (the Telegram user) and has an
id made from the update that asked for it, so handling that update again adds nothing.
"""

import fnmatch
import os

from monitor import state

FILENAME = "silences.json"
MAX_SECONDS = 365 * 86400  # a silence longer than a year is a typo (or 99999999999999d), not a plan


def duration_problem(seconds: float) -> str | None:
    """Why a silence cannot last `seconds` (one short line), or None."""
    if not seconds > 0:
        return "the duration must be above zero"
    if seconds > MAX_SECONDS:
        return "the duration must be at most 365d"
    return None


def _path(folder: str) -> str:
    return os.path.join(folder, FILENAME)


def load(folder: str, now: float) -> list[dict]:
    """Return the active silences (expired ones dropped from the list, not the file)."""
    data = state.read_json(_path(folder), default={"silences": []})
    items = data.get("silences") if isinstance(data.get("silences"), list) else []
    return [s for s in items if isinstance(s, dict) and isinstance(s.get("until"), (int, float))
            and isinstance(s.get("pattern"), str) and s["until"] > now]


def save(folder: str, silences: list[dict]) -> None:
    state.ensure_folder(folder)
    state.write_json(_path(folder), {"silences": silences})


def add(folder: str, pattern: str, seconds: float, reason: str, now: float, author: str | None = None,
        silence_id: str | None = None) -> dict:
    """Add a silence and save; with `silence_id` already active, return that one unchanged."""
    silences = load(folder, now)
    same = [s for s in silences if silence_id and s.get("id") == silence_id]
    if same:
        return same[0]
    silence = {"id": silence_id or os.urandom(4).hex(), "pattern": pattern, "until": now + seconds,
               "reason": reason, "created": now}
    if author:
        silence["author"] = author
    silences.append(silence)
    save(folder, silences)
    return silence


def remove(folder: str, silence_id: str, now: float) -> bool:
    silences = load(folder, now)
    kept = [s for s in silences if s.get("id") != silence_id]
    save(folder, kept)
    return len(kept) != len(silences)


def matching(silences: list[dict], check_id: str) -> dict | None:
    for silence in silences:
        if fnmatch.fnmatchcase(check_id, silence["pattern"]):
            return silence
    return None
