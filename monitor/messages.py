"""Alert text: one Telegram message per run, alerts grouped worst first, HTML escaped.

Every interpolated value goes through `html.escape`; each line opens and closes its
own tags, so `telegram.split_message` can split on any line break.
"""

import html
from datetime import datetime

from monitor.alert_state import FLAPPING, RESOLVED
from monitor.results import CRITICAL, UNKNOWN, WARNING
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
    text = str(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _time(ts: float) -> str:
    return datetime.fromtimestamp(ts).astimezone().strftime("%Y-%m-%d %H:%M %Z")


def _value(result) -> str:
    if result.value is None:
        return ""
    value = f"{result.value:g}" if isinstance(result.value, float) else str(result.value)
    unit = result.unit or ""
    return f"{value}{unit}" if unit == "%" else f"{value} {unit}".rstrip()


def _threshold(result, status) -> str:
    level = result.critical if status == CRITICAL else result.warning
    if level is None:
        return ""
    text = level.text if hasattr(level, "text") else f"{level:g}" if isinstance(level, float) else str(level)
    return f"{'critical' if status == CRITICAL else 'warning'} at {text}"


def alert_lines(alert) -> list[str]:
    r = alert.result
    if alert.status == RESOLVED:
        head = f"<b>{e(alert.check_id)}</b> ok again after {e(format_duration(alert.duration))}"
        detail = [e(_clip(r.message))] if r.message else []
        return [f"• {head}"] + [f"  {line}" for line in detail]
    if alert.status == FLAPPING:
        parts = [p for p in (_value(r), _threshold(r, r.status) if r.status != "ok" else "") if p]
        head = f"<b>{e(alert.check_id)}</b>" + (f" — {e(' · '.join(parts))}" if parts else "")
        return [f"• {head}",
                f"  {e(f'changed state {alert.changes} times in {format_duration(alert.duration)}')}, "
                f"now {e(r.status)}: {e(_clip(r.message))}",
                f"  {e(f'no more alerts until it stays ok or failing for {format_duration(alert.flap_window)}')}"]
    parts = [p for p in (_value(r), _threshold(r, alert.status)) if p]
    head = f"<b>{e(alert.check_id)}</b>" + (f" — {e(' · '.join(parts))}" if parts else "")
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
        lines.append(f"<b>{e(header)}</b> · {e(host)} ({e(environment)})")
        for alert in members:
            lines += alert_lines(alert)
    lines.append("")
    lines.append(f"<i>{e(_time(now))}</i>")
    return "\n".join(lines)


def rings(alerts) -> bool:
    """Critical messages ring; info and resolved-only messages arrive silently."""
    return any(a.status in (CRITICAL, WARNING, UNKNOWN, FLAPPING) for a in alerts)
