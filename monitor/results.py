"""Judging: statuses, thresholds and the immutable Result every check returns.

Checks measure and then call `Threshold.judge`; nothing in here does I/O.
"""

from typing import Any, NamedTuple

from monitor.text import printable, printable_tree

OK, WARNING, CRITICAL, UNKNOWN = "ok", "warning", "critical", "unknown"

# The overall status is the worst check: ok < warning < unknown < critical.
SEVERITY = {OK: 0, WARNING: 1, UNKNOWN: 2, CRITICAL: 3}
# Exit codes follow the Nagios plugin convention.
EXIT_CODES = {OK: 0, WARNING: 1, CRITICAL: 2, UNKNOWN: 3}


class Threshold(NamedTuple):
    """A warning and a critical level; by default a higher value is worse."""

    warning: float
    critical: float
    lower_is_worse: bool = False

    def judge(self, value: float | None) -> str:
        """Given a measured value, return ok, warning or critical (unknown for None)."""
        if value is None:
            return UNKNOWN
        if self.lower_is_worse:
            if value <= self.critical:
                return CRITICAL
            return WARNING if value <= self.warning else OK
        if value >= self.critical:
            return CRITICAL
        return WARNING if value >= self.warning else OK


class Result:
    """What one check found: the status plus what a person needs to act on it.

    A plain class rather than a dataclass: building dataclasses costs milliseconds
    at import, and every cron run pays for it.
    """

    __slots__ = ("status", "message", "value", "unit", "warning", "critical", "details",
                 "id", "kind", "duration_ms", "lower_is_worse")

    def __init__(self, status: str, message: str, value: float | None = None, unit: str | None = None,
                 warning: Any = None, critical: Any = None, details: dict | None = None,
                 id: str = "", kind: str = "", duration_ms: float = 0.0, lower_is_worse: bool = False):
        self.status, self.message, self.value, self.unit = status, message, value, unit
        self.warning, self.critical = warning, critical
        self.details = details if details is not None else {}
        self.id, self.kind, self.duration_ms = id, kind, duration_ms
        # The levels' direction: a lower value is worse (quota left, TTL). Said, not guessed from
        # warning > critical, which cannot tell when both levels are the same.
        self.lower_is_worse = lower_is_worse

    def replace(self, **changes) -> "Result":
        fields = {name: getattr(self, name) for name in self.__slots__}
        fields.update(changes)
        return Result(**fields)

    def __eq__(self, other):
        return isinstance(other, Result) and all(
            getattr(self, n) == getattr(other, n) for n in self.__slots__)

    def __repr__(self):
        return f"Result({self.id or self.kind or '?'}: {self.status}, {self.message!r}, value={self.value!r})"

    def to_json(self) -> dict:
        out = {
            "kind": self.kind,
            "status": self.status,
            "value": self.value,
            "unit": self.unit,
            "warning": self.warning,
            "critical": self.critical,
            "message": self.message,
            "duration_ms": self.duration_ms,
            "details": self.details,
        }
        if self.lower_is_worse:
            out["lower_is_worse"] = True
        return out


def measured(value: float | None, threshold: Threshold, message: str, unit: str = "%",
             details: dict | None = None, worst_of: str = OK) -> Result:
    """Given a measurement and its threshold, return the judged Result.

    `worst_of` lets a check raise the verdict for reasons other than the value
    (for example new network errors), never lower it.
    """
    status = worst(threshold.judge(value), worst_of) if value is not None else worst_of
    return Result(status=status, message=message, value=value, unit=unit,
                  warning=threshold.warning, critical=threshold.critical,
                  details=details or {}, lower_is_worse=threshold.lower_is_worse)


def is_number(value) -> bool:
    """A finite int or float, not a bool: what a hostile answer or a hand-edited state file may not hold."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value - value == 0


def worst(*statuses: str) -> str:
    """Return the worst of the given statuses (ok when none)."""
    return max(statuses, key=SEVERITY.__getitem__, default=OK)


def overall(results) -> str:
    return worst(*(r.status for r in results))


def with_identity(result: Result, check_id: str, kind: str, duration_ms: float) -> Result:
    """The Result as every output sees it: named, timed, and printable.

    The one place where what a check measured outside (file and process names, HTTP
    bodies, versions) is made printable for the JSON, the log, the terminal and Telegram.
    """
    changes = {"id": check_id, "kind": kind, "duration_ms": round(duration_ms, 2),
               "details": finite_tree(printable_tree(result.details))}
    if isinstance(result.message, str):
        changes["message"] = printable(result.message)
    if isinstance(result.value, str):
        changes["value"] = printable(result.value)
    if not _finite_or_not_float(result.value):
        # Infinity/NaN is not JSON (strict parsers reject the whole line) nor a useful
        # Prometheus sample: the value is unknown, and so is the check.
        changes.update(value=None, status=worst(result.status, UNKNOWN),
                       message=f"{changes.get('message', result.message)} (value is not a finite number)")
    for name in ("warning", "critical"):
        if not _finite_or_not_float(getattr(result, name)):
            changes[name] = None
    return result.replace(**changes)


def _finite_or_not_float(value) -> bool:
    return not isinstance(value, float) or value - value == 0  # inf - inf and nan - nan are nan


def finite_tree(value):
    """`value` with every infinite or NaN float inside dicts, lists and tuples made None."""
    if isinstance(value, float):
        return value if value - value == 0 else None
    if isinstance(value, dict):
        return {k: finite_tree(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_tree(v) for v in value]
    return value
