"""The daily report as one Telegram message (HTML, every value escaped).

The built-in report is `templates/daily_report.html.j2`, rendered here by `_builtin`
in plain Python: importing and compiling Jinja2 cost ~70 ms of a report that reads
a gigabyte of logs in a few hundred. `tests/test_report_text.py` renders the template
with Jinja2 beside it on every branch: the two must give the same text. `report.template`
replaces it and renders in Jinja2's sandbox; a custom template that fails while
rendering falls back to the built-in one, and the message says so.
"""

import logging
import os
from datetime import datetime

from monitor.text import ELLIPSIS, NAME_CHARS, clip, html_escape, printable
from monitor.units import format_duration

log = logging.getLogger("monitor")
BUILTIN = os.path.join(os.path.dirname(__file__), "templates", "daily_report.html.j2")


def _environment():
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    # Sandboxed: a template reaches no Python internals (`cycler.__init__.__globals__.os`
    # would run commands as monitor's user, often root) and changes no value it is given.
    # Autoescape everything: source names and log text come from the outside world.
    env = ImmutableSandboxedEnvironment(autoescape=True, trim_blocks=False, keep_trailing_newline=False,
                                        undefined=jinja2.StrictUndefined)
    env.filters.update(clip=clip, names=names, hhmm=hhmm)
    return env


def _unsafe_access(tree) -> tuple[int, str] | None:
    """The (line, name) of the first attribute the sandbox would refuse, written in the parsed `tree`.

    Catches at config time what the sandbox stops at 09:00: `x.__class__`, `x["_y"]`,
    `x|attr("__init__")`, and the frame and code attributes of generators and coroutines.
    A name computed while rendering is left to the sandbox.
    """
    from jinja2 import nodes
    from jinja2 import sandbox

    internal = (sandbox.UNSAFE_FUNCTION_ATTRIBUTES | sandbox.UNSAFE_METHOD_ATTRIBUTES
                | sandbox.UNSAFE_GENERATOR_ATTRIBUTES | sandbox.UNSAFE_COROUTINE_ATTRIBUTES
                | sandbox.UNSAFE_ASYNC_GENERATOR_ATTRIBUTES | {"mro"})

    def unsafe(name) -> bool:
        return isinstance(name, str) and (name.startswith("_") or name in internal)

    for node in tree.find_all((nodes.Getattr, nodes.Getitem, nodes.Filter)):
        if isinstance(node, nodes.Getattr):
            name = node.attr
        elif isinstance(node, nodes.Getitem):
            name = node.arg.value if isinstance(node.arg, nodes.Const) else None
        else:
            name = (node.args[0].value if node.name == "attr" and node.args
                    and isinstance(node.args[0], nodes.Const) else None)
        if unsafe(name):
            return node.lineno, name
    return None


# --- values as a phone shows them (filters of every template) ------------------------------

def names(items, most: int = 10, chars: int = NAME_CHARS) -> str:
    """"a, b, c and 4 more": at most `most` names, each clipped to `chars` characters."""
    items = list(items)
    shown = ", ".join(clip(item, chars) for item in items[:most])
    return shown + (f" and {len(items) - most} more" if len(items) > most else "")


def hhmm(value) -> str:
    """A row's time as HH:MM (the report covers one day in its own zone); other text clipped."""
    try:
        return datetime.fromisoformat(str(value)).strftime("%H:%M")
    except ValueError:
        return clip(value, 25)


MAX_MESSAGES = 2  # a report never floods the chat (nor queues an alert behind 50 parts)


def bound(text: str, max_messages: int = MAX_MESSAGES) -> str:
    """Return `text` cut, on whole lines, to what `max_messages` Telegram messages hold.

    The built-in template clips every value, so it fits; this holds for any template
    and any number of sources or incidents. A line longer than a message is cut with
    its tags balanced; the cut says how many lines were left out.
    """
    from monitor.alerts.telegram import LIMIT, _cut_line, split_message, units

    if len(split_message(text)) <= max_messages:
        return text
    width = LIMIT // 4  # a line longer than this is cut: it could not be read on a phone anyway
    lines = []
    for line in text.split("\n"):
        if units(line) > width:
            line = _cut_line(line, width - 1)[0] + ELLIPSIS
        lines.append(line)
    note = "<i>… {} more line(s) left out: the report holds at most {} messages</i>"
    budget = LIMIT - units(note) - 10  # room for the note in the last message
    chunks, size = 1, 0
    for kept, line in enumerate(lines):
        needed = units(line) + (1 if size else 0)
        if size + needed > (budget if chunks == max_messages else LIMIT):
            if chunks == max_messages:
                return "\n".join(lines[:kept] + [note.format(len(lines) - kept, max_messages)])
            chunks, size = chunks + 1, units(line)
        else:
            size += needed
    return "\n".join(lines)


def load_template(path: str, check: bool = False):
    """Compile a template file. Raise jinja2.TemplateSyntaxError (with its line) if broken.

    With `check`, also raise jinja2.sandbox.SecurityError (with `lineno`) for an
    attribute the sandbox refuses.
    """
    with open(path, encoding="utf-8") as handle:
        source = handle.read()
    env = _environment()
    if not check:
        return env.from_string(source)
    from jinja2.sandbox import SecurityError

    tree = env.parse(source)  # parsed once: checked, then compiled
    found = _unsafe_access(tree)
    if found:
        error = SecurityError(f'"{found[1]}" is not allowed: report templates run sandboxed')
        error.lineno = found[0]
        raise error
    return env.from_string(tree)


def validate_template(path: str) -> str | None:
    """Given `report.template`, return None if it compiles, else one config error line.

    The line names the file and, for a syntax error, the line Jinja2 stopped at:
    'report.template: /etc/monitor/report.j2 line 3: unexpected '}''. Meant for
    config loading, so a broken template fails `monitor config check`, not 09:00.
    """
    if not path:
        return None
    import jinja2
    from jinja2.sandbox import SecurityError

    shown = printable(path)
    try:
        load_template(path, check=True)
    except jinja2.TemplateSyntaxError as exc:
        return f"report.template: {shown} line {exc.lineno}: {printable(exc.message)}"
    except SecurityError as exc:
        return f"report.template: {shown} line {exc.lineno}: {printable(exc)}"
    except OSError as exc:
        return f"report.template: {shown}: cannot read: {exc.strerror or exc}"
    except UnicodeDecodeError as exc:
        return f"report.template: {shown}: not UTF-8 text ({exc.reason} at byte {exc.start})"
    except ValueError as exc:  # a NUL in the path
        return f"report.template: {shown}: {exc}"
    except RecursionError:  # "{{ ((((((...": the parser recurses per level
        return f"report.template: {shown}: nested too deeply"
    return None


def render(report: dict, missing: list[str], *, host: str, environment: str, warning: bool,
           min_opportunities: int | None, template_path: str = "") -> str:
    context = values(report, missing, host=host, environment=environment, warning=warning,
                     min_opportunities=min_opportunities)
    if template_path:
        try:
            return bound(_tidy(load_template(template_path).render(**context)))
        except Exception as exc:  # noqa: BLE001 - a broken custom template must not cost the report
            from jinja2.sandbox import SecurityError

            if isinstance(exc, SecurityError):  # config check catches the names written in the template
                log.error("report.template %s tried what its sandbox refuses (%s); using the built-in template",
                          template_path, exc, extra={"event": "template_unsafe"})
            log.warning("report.template %s failed while rendering (%s: %s); using the built-in template",
                        template_path, type(exc).__name__, exc, extra={"event": "template_failed"})
            context["missing"] = missing + [f"custom template failed ({type(exc).__name__}); built-in used"]
    return bound(_tidy(_builtin(**context)))


def values(report: dict, missing: list[str], *, host: str, environment: str, warning: bool,
           min_opportunities: int | None) -> dict:
    """What a template is given: the report, and the names the built-in one uses."""
    change = report.get("change") or {}

    def show_change(key):
        entry = change.get(key) or {}
        if entry.get("delta") is None:
            return ""
        percent = f", {signed(entry['percent'])} %" if entry.get("percent") is not None else ""
        return f" ({signed(entry['delta'])} vs the day before{percent})"

    def usual(key):
        entry = (report.get("baseline") or {}).get(key) or {}
        if entry.get("median_7d") is None:
            return ""
        shown = number(entry["median_7d"]) if key == "opportunities" else f"{entry['median_7d']:.2f}"
        percent = f", {signed(entry['percent'])} %" if entry.get("percent") is not None else ""
        weekday = ""
        if entry.get("weekday_normal"):  # far below the week, as usual for this weekday: say which median
            same, found = entry["same_weekday"], report["opportunities_found"]
            weekday = f"; same weekday {number(same)}, {signed(round(100.0 * (found - same) / same, 1))} %"
        return f" (7-day median {shown}{percent}{weekday})"

    def far_below(dropped):
        return names(f"{clip(d['source'], 40)} {d['count']} (7-day median {number(d['median_7d'])})" for d in dropped)

    learned = [name for name in report.get("learned_silent") or () if name not in report["inactive_sources"]]
    return {"usual": usual, "silent": list(report["inactive_sources"]) + learned, "far_below": far_below,
            "report": report, "missing": missing, "host": host, "environment": environment,
            "header": "⚠️ WARNING" if warning else "ℹ️ INFO", "day": report["date"],
            "timezone": report["timezone"], "hours": round(report["window"]["hours"], 2),
            "min_opportunities": min_opportunities, "change": show_change, "duration": format_duration}


MINUS = "\u2212"  # "−": a real minus, the width of "+" on a phone; one style for every signed figure


def signed(value) -> str:
    """A change with its sign: "+0.5", "−49", "−0.0435", "+1250000"."""
    return ("+" if value >= 0 else MINUS) + number(abs(value))


def number(value) -> str:
    """A count as a count ("1250000", not "1.25e+06"), other figures to 6 significant digits."""
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else f"{value:g}"


def _e(value) -> str:
    """A value as Jinja2's autoescape writes it (markupsafe's entities, quotes too)."""
    return html_escape(value, quote=True)


def _builtin(*, report, missing, host, environment, header, day, timezone, hours, min_opportunities,
             usual, change, silent, far_below, duration) -> str:
    """`templates/daily_report.html.j2`, line for line (before `_tidy`)."""
    out = [f"{_e(header)} <b>Daily report</b> · {_e(clip(host))} ({_e(clip(environment))})\n",
           f"<i>{_e(day)}, {_e(timezone)}" + (f" ({_e(hours)} h day)" if hours != 24 else "") + "</i>\n"]
    if missing:
        out.append("\n")
        out += [f"<i>Not available: {_e(clip(what, 300))}</i>\n" for what in missing]
    out.append("\n")
    found = report["opportunities_found"]
    if found is not None:
        below = f" (below {_e(min_opportunities)})" if min_opportunities and found < min_opportunities else ""
        out.append(f"<b>Opportunities:</b> {_e(found)}{below}{_e(usual('opportunities'))}"
                   f"{_e(change('opportunities'))}\n")
        roi = "%.2f" % report["avg_roi"] if report["avg_roi"] is not None else "–"
        out.append(f"<b>Average ROI:</b> {_e(roi)}{_e(usual('avg_roi'))}{_e(change('avg_roi'))}\n")
        base = report.get("baseline")
        if base is not None and not base["enough"]:
            out.append(f"<i>No baseline yet: {_e(base['days_with_data'])} of the 7 days before had data "
                       "(3 needed)</i>\n")
        out.append("\n")
        top = report["top_opportunities"]
        if top:
            out.append(f"<b>Best {len(top)}:</b>\n")
            out += [f"{i}. {_e(clip(o['source']))} · ROI {_e('%.2f' % o['roi'])} · {_e(hhmm(o['time']))}\n"
                    for i, o in enumerate(top, 1)]
        out.append(f"<b>Sources active:</b> {_e(report['sources_active'])}"
                   + (f" · silent: {_e(names(silent))}" if silent else "") + "\n")
        if report.get("dropped_sources"):
            out.append(f"<b>Far below usual:</b> {_e(far_below(report['dropped_sources']))}\n")
        if report.get("damaged_values"):
            out.append(f"<i>{_e(report['damaged_values'])} database value(s) were not UTF-8: "
                       "their bytes are shown as \\xff</i>\n")
    errors = report["errors"]
    if errors:
        critical = f" ({_e(errors['critical'])} critical)" if errors["critical"] else ""
        out.append(f"<b>Errors logged:</b> {_e(errors['count'])}{critical}\n")
        if errors["unreadable"]:
            out.append(f"<i>Unreadable, the count may be short: {_e(names(errors['unreadable'], 5, 160))}</i>\n")
    health = report["health"]
    if health:
        ok = f" · {_e(health['percent_ok'])}% ok" if health["percent_ok"] is not None else ""
        out.append(f"<b>Health runs:</b> {_e(health['runs_seen'])}/{_e(health['runs_expected'])}{ok}\n")
        out += [f"  {_e(clip(check, 160))}: {_e(i['incidents'])} incident(s), down "
                f"{_e(duration(i['downtime_seconds']))}\n" for check, i in health["incidents"].items()]
    return "".join(out)


def _tidy(text: str) -> str:
    lines = [line.rstrip() for line in text.strip().splitlines()]
    out = []
    for line in lines:  # no runs of blank lines on a phone screen
        if line or (out and out[-1]):
            out.append(line)
    return "\n".join(out)
