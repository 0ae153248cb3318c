"""Alert text: one Telegram message per run, alerts grouped worst first, HTML escaped.

Every interpolated value goes through `html.escape`; each line opens and closes its
own tags, so `telegram.split_message` can split on any line break.
"""

import html
from datetime import datetime

from monitor.alerts.state import FLAPPING, RESOLVED
from monitor.checks import measure
from monitor.results import CRITICAL, UNKNOWN, WARNING
from monitor.text import ID_CHARS, clip
from monitor.units import format_duration

HEADERS = {
    CRITICAL: "🚨 CRITICAL",
    WARNING: "⚠️ WARNING",
    UNKNOWN: "⚠️ WARNING",  # an unknown check alerts like a warning: "could not check"
    "info": "ℹ️ INFO",
    RESOLVED: "✅ RESOLVED",
    FLAPPING: "🔁 FLAPPING",
}
ORDER = {CRITICAL: 0, WARNING: 1, UNKNOWN: 1, "info": 2, RESOLVED: 3, FLAPPING: 1.5}
MAX_VALUE_CHARS = 600  # a 20,000-character check message is cut, not split mid-alert

e = html.escape


def _clip(text, limit=MAX_VALUE_CHARS) -> str:
    return clip(text, limit)


def _time(ts: float) -> str:
    return datetime.fromtimestamp(ts).astimezone().strftime("%Y-%m-%d %H:%M %Z")


def _number(value: float) -> str:
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}".rstrip("0").rstrip(".")


def _amount(value, unit: str | None, written: str | None = None) -> str:
    """A value or a threshold with its unit, as a person reads it: 13h57m, 3.2 s, 96.1%."""
    if written:
        return written  # a threshold as the config wrote it ("26h")
    unit = unit or ""
    if unit == "s":
        return format_duration(value)
    if unit == "ms":
        return f"{_number(value / 1000)} s" if value >= 1000 else f"{_number(value)} ms"
    if unit == "%":
        return f"{_number(value)}%"
    return f"{_number(value)} {unit}".rstrip()


def headline(result, status, check_id: str | None = None) -> str:
    """The value and the threshold that caused `status`, with units; "" when no number did.

    "latency 3.2 s > 3 s", "age 27h3m > 26h", "remaining 4% < 5%". A refused connection
    (no value), a failed verification of a fresh backup (the age is fine) or an
    unknown check show none: the message line says why.
    """
    if status not in (WARNING, CRITICAL) or isinstance(result.value, bool) \
            or not isinstance(result.value, (int, float)):
        return ""
    level = result.critical if status == CRITICAL else result.warning
    if isinstance(level, bool) or not isinstance(level, (int, float)):
        return ""
    # What the value measures, as the check's module declares it (MEASURES).
    name, lower_is_worse, *minimum = measure(result.kind, check_id or result.id) or ("", None)
    if minimum and isinstance((result.details or {}).get(minimum[0]), int):
        level = result.details[minimum[0]]  # a minimum to reach: say "below the minimum"
    if lower_is_worse is None:  # not declared: lower is worse where the warning sits above the critical
        other = result.warning if status == CRITICAL else result.critical
        lower_is_worse = isinstance(other, (int, float)) and (other > level if status == CRITICAL else other < level)
    value = result.value
    if not (value < level if minimum else value <= level if lower_is_worse else value >= level):
        return ""  # the number is within its threshold: something else caused the status
    sign = ("<" if value < level else "≤") if lower_is_worse else (">" if value > level else "≥")
    shown = f"{_amount(value, result.unit)} {sign} {_amount(level, result.unit, getattr(level, 'text', None))}"
    return clip(f"{name} {shown}" if name else shown, MAX_VALUE_CHARS)


def alert_lines(alert) -> list[str]:
    r = alert.result
    name = clip(alert.check_id, ID_CHARS)
    if alert.status == RESOLVED:
        head = f"<b>{e(name)}</b> ok again after {e(format_duration(alert.duration))}"
        detail = [e(_clip(r.message))] if r.message else []
        return [f"• {head}"] + [f"  {line}" for line in detail]
    if alert.status == FLAPPING:
        numbers = headline(r, r.status, alert.check_id)
        head = f"<b>{e(name)}</b>" + (f" — {e(numbers)}" if numbers else "")
        return [f"• {head}",
                f"  {e(f'changed state {alert.changes} times in {format_duration(alert.duration)}')}, "
                f"now {e(r.status)}: {e(_clip(r.message))}",
                f"  {e(f'no more alerts until it stays ok or failing for {format_duration(alert.flap_window)}')}"]
    numbers = headline(r, alert.status, alert.check_id)
    head = f"<b>{e(name)}</b>" + (f" — {e(numbers)}" if numbers else "")
    prefix = "could not check: " if alert.status == UNKNOWN else ""
    note = " (reminder)" if alert.reminder else (f" (was {e(alert.previous)})" if alert.previous else "")
    return [f"• {head}{note}",
            f"  {e(prefix + _clip(r.message))}",
            f"  since {e(_time(alert.since))}" + (f" ({e(format_duration(alert.duration))})" if alert.duration >= 60 else "")]


def compose(alerts, host: str, environment: str, now: float) -> str:
    """Return the run's message: a section per severity, worst first."""
    groups: dict[str, list] = {}
    for alert in sorted(alerts, key=lambda a: (ORDER[a.status], a.check_id)):
        groups.setdefault(HEADERS[alert.status], []).append(alert)
    lines = []
    for header, members in groups.items():
        if lines:
            lines.append("")
        lines.append(f"<b>{e(header)}</b> · {e(clip(host))} ({e(clip(environment))})")
        for alert in members:
            lines += alert_lines(alert)
    lines.append("")
    lines.append(f"<i>{e(_time(now))}</i>")
    return "\n".join(lines)


def rings(alerts) -> bool:
    """Critical messages ring; info and resolved-only messages arrive silently."""
    return any(a.status in (CRITICAL, WARNING, UNKNOWN, FLAPPING) for a in alerts)
