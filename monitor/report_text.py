"""The daily report as one Telegram message, rendered by Jinja2 (HTML, autoescaped).

The built-in template is `templates/daily_report.html.j2`; `report.template`
replaces it. A custom template that fails while rendering falls back to the
built-in one, and the message says so.
"""

import logging
import os

from monitor.units import format_duration

log = logging.getLogger("monitor")
BUILTIN = os.path.join(os.path.dirname(__file__), "templates", "daily_report.html.j2")


def _environment():
    import jinja2

    # Autoescape everything: source names and log text come from the outside world.
    return jinja2.Environment(autoescape=True, trim_blocks=False, keep_trailing_newline=False,
                              undefined=jinja2.StrictUndefined)


def load_template(path: str):
    """Compile a template file. Raise jinja2.TemplateSyntaxError (with its line) if broken."""
    with open(path, encoding="utf-8") as handle:
        return _environment().from_string(handle.read())


def validate_template(path: str) -> str | None:
    """Given `report.template`, return None if it compiles, else one config error line.

    The line names the file and, for a syntax error, the line Jinja2 stopped at:
    'report.template: /etc/monitor/report.j2 line 3: unexpected '}''. Meant for
    config loading, so a broken template fails `monitor config check`, not 09:00.
    """
    if not path:
        return None
    import jinja2

    try:
        load_template(path)
    except jinja2.TemplateSyntaxError as exc:
        return f"report.template: {path} line {exc.lineno}: {exc.message}"
    except OSError as exc:
        return f"report.template: {path}: cannot read: {exc.strerror or exc}"
    except UnicodeDecodeError as exc:
        return f"report.template: {path}: not UTF-8 text ({exc.reason} at byte {exc.start})"
    return None


def render(report: dict, missing: list[str], *, host: str, environment: str, warning: bool,
           min_opportunities: int | None, template_path: str = "") -> str:
    change = report.get("change") or {}

    def show_change(key):
        entry = change.get(key) or {}
        if entry.get("delta") is None:
            return ""
        sign = "+" if entry["delta"] >= 0 else ""
        percent = f", {sign}{entry['percent']}%" if entry.get("percent") is not None else ""
        return f" ({sign}{entry['delta']:g} vs the day before{percent})"

    context = {"report": report, "missing": missing, "host": host, "environment": environment,
               "header": "⚠️ WARNING" if warning else "ℹ️ INFO", "day": report["date"],
               "timezone": report["timezone"], "hours": round(report["window"]["hours"], 2),
               "min_opportunities": min_opportunities, "change": show_change,
               "duration": format_duration}
    if template_path:
        try:
            return _tidy(load_template(template_path).render(**context))
        except Exception as exc:  # noqa: BLE001 - a broken custom template must not cost the report
            log.warning("report.template %s failed while rendering (%s: %s); using the built-in template",
                        template_path, type(exc).__name__, exc, extra={"event": "template_failed"})
            context["missing"] = missing + [f"custom template failed ({type(exc).__name__}); built-in used"]
    return _tidy(load_template(BUILTIN).render(**context))


def _tidy(text: str) -> str:
    lines = [line.rstrip() for line in text.strip().splitlines()]
    out = []
    for line in lines:  # no runs of blank lines on a phone screen
        if line or (out and out[-1]):
            out.append(line)
    return "\n".join(out)
