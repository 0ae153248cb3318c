"""Outputs to the terminal: the one-line JSON envelope, or a table a person reads over SSH.

Knows nothing about individual checks: it renders whatever results it is given.
"""

import json
import os
import sys

from monitor.redact import scrub
from monitor.results import SEVERITY, finite_tree
from monitor.text import encode_guard, printable

SCHEMA_VERSION = 1

written = False  # whether this run printed its result (write_stdout)

_COLOURS = {"ok": "32", "warning": "33", "critical": "31;1", "unknown": "35"}


def envelope(command: str, started, host: str, environment: str, overall_status: str,
             duration_ms: float, results, extra: dict | None = None, config: str | None = None) -> dict:
    """The JSON contract of SPEC: every command prints this object (`config`: the path
    of the config file used, null when none was found)."""
    out = {
        "schema_version": SCHEMA_VERSION,
        "command": command,
        "timestamp": started.isoformat(timespec="seconds"),
        "host": host,
        "environment": environment,
        "config": config,
        "overall_status": overall_status,
        "healthy": overall_status == "ok",
        "duration_ms": round(duration_ms, 1),
        "checks": {r.id: r.to_json() for r in results},
    }
    out.update(extra or {})
    return out


def to_json(data: dict) -> str:
    # Check results are printable already; the guard covers any other outside text.
    try:  # strict JSON: no Infinity or NaN, which strict parsers reject with the whole line
        text = json.dumps(data, separators=(", ", ": "), ensure_ascii=False, default=str, allow_nan=False)
    except ValueError:
        text = json.dumps(finite_tree(data), separators=(", ", ": "), ensure_ascii=False, default=str)
    return encode_guard(text, json=True)


def _value(check: dict) -> str:
    value = check.get("value")
    if value is None:
        return "-"
    text = f"{value:g}" if isinstance(value, float) else str(value)
    unit = check.get("unit") or ""
    return f"{text}{unit}" if unit == "%" else f"{text} {unit}".rstrip()


def to_text(data: dict, colour: bool = False) -> str:
    """Render the envelope as an aligned table, worst checks first."""
    def paint(status, text):
        return f"\033[{_COLOURS[status]}m{text}\033[0m" if colour and status in _COLOURS else text

    checks = sorted(data["checks"].items(), key=lambda kv: -SEVERITY.get(kv[1]["status"], 0))
    rows = [(c["status"].upper(), printable(cid), printable(_value(c)), printable(c.get("message", "")))
            for cid, c in checks]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(("STATUS", "CHECK", "VALUE"))]
    counts = {}
    for _, c in checks:
        counts[c["status"]] = counts.get(c["status"], 0) + 1
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items(), key=lambda kv: SEVERITY[kv[0]]))
    lines = [f"{data['host']} · {data['environment']} · {data['command']}: "
             f"{paint(data['overall_status'], data['overall_status'].upper())} "
             f"({summary or 'no checks'}) in {data['duration_ms']:.0f} ms",
             f"{'STATUS':<{widths[0]}}  {'CHECK':<{widths[1]}}  {'VALUE':>{widths[2]}}  MESSAGE"]
    if "config" in data and data["config"] is None:  # run from the wrong folder: say it
        lines.insert(1, "config: none found, built-in defaults (host checks only)")
    for status, cid, value, message in rows:
        lines.append(f"{paint(status.lower(), f'{status:<{widths[0]}}')}  {cid:<{widths[1]}}  "
                     f"{value:>{widths[2]}}  {message}")
    for key in ("log_write_error", "state_write_error", "textfile_write_error", "notify_error"):
        if data.get(key):
            lines.append(f"! {key}: {printable(data[key])}")
    return "\n".join(lines)


def use_colour(stream=sys.stdout) -> bool:
    return stream.isatty() and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"


def write_stdout(text: str) -> None:
    """Print to stdout; a reader that went away (`| head -c1`) ends the run quietly.

    Any other failure (stdout on a full disk) is one line on stderr, not a traceback.
    """
    global written
    written = True
    try:
        sys.stdout.write(encode_guard(scrub(text)) + "\n")
        sys.stdout.flush()
    except OSError as exc:
        if not isinstance(exc, BrokenPipeError):
            print(f"monitor: cannot write the result to stdout: {exc.strerror or exc}", file=sys.stderr)
        # Point stdout at /dev/null so the interpreter's final flush does not raise again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def flatten(data: dict, prefix: str = "") -> list[str]:
    """Render nested config as `dotted.key = value` lines, greppable over SSH."""
    lines = []
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value and not set(value) <= {"warning", "critical"}:
            lines += flatten(value, path + ".")
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for i, item in enumerate(value):
                lines += flatten(item, f"{path}[{i}].")
        else:
            lines.append(f"{path} = {json.dumps(value, ensure_ascii=False)}")
    return lines
