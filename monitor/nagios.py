"""Output for Nagios, Icinga, Checkmk and NRPE: the envelope in the plugin API's words.

Like `output.py` it renders whatever checks the envelope holds and names none:

    MONITOR CRITICAL - 1 critical, 1 warning: disk:/, memory | 'disk:/'=96.1%;90;95;0;100 ...
    CRITICAL disk:/: / 96.1% used (critical 95%)
    WARNING memory: memory 87.0% used

The first line is the state (that of the exit code), the counts and the worst checks'
ids, then `|` and one performance datum per check with a finite number as its value,
worst first: its `value`, `warning` and `critical` as the Nagios plugin guidelines
write them ('label'=value[UOM];[warn];[crit];[min];[max]). The lines after it name
each check that is not ok, worst first, then any write or notify error. Everything is
bounded (NRPE and older Nagios cores cut a plugin's output at a few KB): what does not
fit is counted ("… and 12 more"), the worst kept.
"""

from monitor.results import SEVERITY
from monitor.text import clip, printable

STATES = {"ok": "OK", "warning": "WARNING", "critical": "CRITICAL", "unknown": "UNKNOWN"}
PROBLEMS = ("log_write_error", "state_write_error", "textfile_write_error", "notify_error")

# The units of measurement the guidelines allow; others are converted to one of
# these or dropped (the number stays, without a unit: "B/s", "per CPU").
_ALLOWED = {"", "s", "ms", "us", "%", "B", "KB", "MB", "TB", "c"}
_CONVERTED = {"µs": ("us", 1), "min": ("s", 60), "h": ("s", 3600), "d": ("s", 86400),
              "KiB": ("B", 1024), "MiB": ("B", 1024 ** 2), "GiB": ("B", 1024 ** 3),
              "TiB": ("B", 1024 ** 4), "GB": ("B", 1000 ** 3)}

NAMES_SHOWN = 5        # check ids named on the first line
PERFDATA_CHARS = 3000  # performance data on the first line
LINE_CHARS = 300       # one line of long output
LONG_LINES = 20        # lines of long output


def state(data: dict) -> str:
    """The plugin state of an envelope: its overall status, raised to WARNING (exit 1)
    when logs, state or the textfile could not be written."""
    status = data["overall_status"]
    if status == "ok" and any(data.get(key) for key in PROBLEMS):
        status = "warning"
    return STATES.get(status, "UNKNOWN")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value - value == 0


def number(value: float) -> str:
    """A number as the guidelines' class [-0-9.] has it: no exponent, no "inf", no "-0"."""
    if isinstance(value, int):
        return str(value)
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def label(text: str) -> str:
    """A perfdata label: quoted, a quote doubled, `=` (which ends a label) as `_` and
    `|` (which starts performance data on a line of long output) as `¦`."""
    return "'" + printable(text).replace("=", "_").replace("|", "¦").replace("'", "''") + "'"


def perfdatum(check_id: str, check: dict) -> str | None:
    """One check's performance datum, or None when its value is not a finite number.

    A higher-is-worse threshold alerts above its level, which Nagios writes `90`; a
    lower-is-worse one (the check's `lower_is_worse`: quota left, token TTL) alerts at or
    below it, the range `@~:20` (inside minus infinity to 20). The direction is the
    check's own, not read from warning > critical, which cannot tell when both are equal.
    """
    value = check.get("value")
    if not _is_number(value):
        return None
    uom, factor = check.get("unit") or "", 1
    if uom not in _ALLOWED:
        uom, factor = _CONVERTED.get(uom, ("", 1))
    warning, critical = (check.get(k) if _is_number(check.get(k)) else None for k in ("warning", "critical"))
    lower_is_worse = check.get("lower_is_worse") is True or (
        warning is not None and critical is not None and warning > critical)  # an envelope that does not say

    def level(threshold):
        if threshold is None:
            return ""
        return ("@~:" if lower_is_worse else "") + number(threshold * factor)

    fields = [f"{label(check_id)}={number(value * factor)}{uom}", level(warning), level(critical),
              "0" if uom == "%" else "", "100" if uom == "%" else ""]
    while fields[-1] == "":
        fields.pop()
    return ";".join(fields)


def _worst_first(checks: dict) -> list:
    ranked = sorted(enumerate(checks.items()), key=lambda item: (-SEVERITY.get(item[1][1]["status"], 2), item[0]))
    return [pair for _, pair in ranked]


def _fitting(items: list[str], limit: int) -> list[str]:
    """The first items whose total length, one separator each, stays within `limit`."""
    kept, size = [], 0
    for item in items:
        size += len(item) + 1
        if size > limit:
            break
        kept.append(item)
    return kept


def to_nagios(data: dict) -> str:
    """Render the envelope as a Nagios plugin's output (see the module's docstring)."""
    checks = _worst_first(data["checks"])
    counts = {status: sum(c["status"] == status for _, c in checks) for status in STATES}
    bad = [(cid, c) for cid, c in checks if c["status"] != "ok"]
    summary = f"{counts['critical']} critical, {counts['warning']} warning"
    if counts["unknown"]:
        summary += f", {counts['unknown']} unknown"
    problems = [key for key in PROBLEMS if data.get(key)]
    if bad or problems:
        names = [clip(cid) for cid, _ in bad[:NAMES_SHOWN]]
        if len(bad) > NAMES_SHOWN:
            names.append(f"and {len(bad) - NAMES_SHOWN} more")
        worst = ", ".join(names + problems).replace("|", "¦")
    else:
        worst = f"{len(checks)} checks ok"
    first = f"MONITOR {state(data)} - {summary}: {worst}"

    perfdata = [p for p in (perfdatum(cid, c) for cid, c in checks) if p]
    if perfdata:
        # Worst first, so what does not fit is the least telling (a datum cannot say "more").
        first += " | " + " ".join(_fitting(perfdata, PERFDATA_CHARS))

    lines = [clip(f"{c['status'].upper()} {cid}: {c.get('message', '')}", LINE_CHARS) for cid, c in bad]
    lines += [clip(f"{key}: {data[key]}", LINE_CHARS) for key in problems]
    if len(lines) > LONG_LINES:
        lines = lines[:LONG_LINES - 1] + [f"… and {len(lines) - LONG_LINES + 1} more"]
    # A `|` in a message would start performance data for the parser: show it as `¦`.
    return "\n".join([first] + [line.replace("|", "¦") for line in lines])


class Remembered:
    """stderr, remembering its first line: what a failed run says, for its status line."""

    def __init__(self, stream):
        self.stream, self.first = stream, ""

    def write(self, text: str) -> int:
        if not self.first and text.strip():
            self.first = text.strip().split("\n")[0]
        return self.stream.write(text)

    def __getattr__(self, name):
        return getattr(self.stream, name)

    def unknown_line(self) -> str:
        return "MONITOR UNKNOWN - " + clip(self.first, LINE_CHARS).replace("|", "¦")
