"""Parsing and printing of the human units used in the config: durations and sizes."""

import math
import re

_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
# Patterns are compiled on first use (re caches them): a run whose config only uses
# the built-in defaults never needs them.
_DURATION_PART = r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)"
_SIZE = r"(\d+(?:\.\d+)?)\s*([kmgt]i?b|b)?"
_SIZE_UNITS = {
    "b": 1,
    "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}


class Duration(float):
    """Seconds, remembering how the user wrote them ("15m") for display."""

    text: str

    def __new__(cls, seconds: float, text: str | None = None):
        self = super().__new__(cls, seconds)
        self.text = text if text is not None else format_duration(seconds)
        return self


class Size(int):
    """Bytes, remembering how the user wrote them ("1MB") for display."""

    text: str

    def __new__(cls, nbytes: int, text: str | None = None):
        self = super().__new__(cls, nbytes)
        self.text = text if text is not None else f"{int(nbytes)}B"
        return self


def parse_duration(text: str) -> Duration:
    """Given "30s", "15m", "1h30m" or "7d", return a Duration. Raise ValueError if malformed."""
    if not isinstance(text, str):
        raise ValueError(f'expected a duration like "5s", got {text!r}')
    compact = text.strip().replace(" ", "")
    if compact[:-1].isdecimal() and compact[-1:] in _DURATION_UNITS and len(compact) < 16:  # "30s": the usual case
        return Duration(int(compact[:-1]) * _DURATION_UNITS[compact[-1]], text.strip())
    parts = re.findall(_DURATION_PART, compact)
    seconds = sum(float(n) * _DURATION_UNITS[u] for n, u in parts)
    # A number too long for a float is infinite: no timeout or age can use it.
    if not compact or "".join(n + u for n, u in parts) != compact or not math.isfinite(seconds):
        raise ValueError(f'expected a duration like "5s", got "{text}"')
    return Duration(seconds, text.strip())


def parse_size(text) -> Size:
    """Given "500KB", "1MB", "2GiB" or a plain number of bytes, return a Size."""
    if isinstance(text, bool) or not isinstance(text, (str, int)):
        raise ValueError(f'expected a size like "1MB", got {text!r}')
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f'expected a size like "1MB", got {text}')
        return Size(text)
    match = re.fullmatch(_SIZE, text.strip(), re.IGNORECASE)
    if not match:
        raise ValueError(f'expected a size like "1MB", got "{text}"')
    number, unit = match.groups()
    nbytes = float(number) * _SIZE_UNITS[(unit or "b").lower()]
    if not math.isfinite(nbytes):  # more digits than a float holds
        raise ValueError(f'expected a size like "1MB", got "{text}"')
    return Size(int(nbytes), text.strip())


def format_duration(seconds: float) -> str:
    """Given seconds, return the shortest readable form: 90 -> "1m30s", 0.25 -> "250ms"."""
    if seconds < 0:
        return "-" + format_duration(-seconds)
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    out, rest = [], int(round(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size:
            out.append(f"{rest // size}{unit}")
            rest %= size
    return "".join(out[:2]) or "0s"


def format_size(nbytes: float) -> str:
    """Given bytes, return a short binary-prefixed size: 3435973836 -> "3.2 GiB"."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(nbytes) < 1024 or unit == "TiB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
