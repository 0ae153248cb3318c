"""`monitor silence add|list|remove`: mute matching checks' alerts for a while."""

import fnmatch
import os
import time
from datetime import datetime

import click

from monitor import state
from monitor.alerts import silences
from monitor.checks import known_check_ids
from monitor.cli import config_options, load_config, parsed_options
from monitor.state import StateError
from monitor.text import printable
from monitor.units import parse_duration


@click.group("silence")
def silence_group():
    """Mute alerts of matching checks for a while (they are still evaluated and logged)."""


def _positive_duration(ctx, param, value):
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    problem = silences.duration_problem(seconds)
    if problem:
        raise click.BadParameter(f'{problem}, got "{value}"')
    return seconds


@silence_group.command("add")
@click.argument("pattern")
@click.option("--for", "duration", required=True, callback=_positive_duration, metavar="DURATION",
              help='How long, e.g. "2h", "1d".')
@click.option("--reason", default="", help="Why, for whoever reads `silence list`.")
@config_options
def silence_add(pattern, duration, reason, **kwargs):
    """Silence checks whose id matches PATTERN (a glob: 'disk:*', 'scraper:uniswap')."""
    config = load_config(parsed_options(**kwargs))
    folder = config["paths"]["state"]
    try:
        silence = silences.add(folder, pattern, duration, reason, time.time())
    except (state.StateError, OSError) as exc:
        raise _silences_not_saved(folder, exc) from None
    try:
        seen = state.read_json(os.path.join(folder, "alerts.json"), default={})
    except (state.StateError, OSError):  # a planted link or FIFO: only the note needs it
        seen = {}
    known = known_check_ids(config, seen)

    note = "" if any(fnmatch.fnmatchcase(c, pattern) for c in known) else \
        " (note: it matches no check known today)"
    click.echo(f"silenced {pattern} until {_when(silence['until'])} [id {silence['id']}]{note}")
    return 0


@silence_group.command("list")
@config_options
def silence_list(**kwargs):
    """List active silences."""
    config = load_config(parsed_options(**kwargs))
    try:
        active = silences.load(config["paths"]["state"], time.time())
    except (state.StateError, OSError) as exc:
        where = f"{exc.filename}: {exc.strerror}" if isinstance(exc, OSError) and exc.filename else exc
        raise click.ClickException(f"cannot read silences: {where}") from None
    if not active:
        click.echo("no active silences")
    for s in active:
        author = f"by {s['author']}  " if isinstance(s.get("author"), str) and s["author"] else ""
        click.echo(printable(f"{s.get('id', '?')}  {s['pattern']:<24} until {_when(s['until'])}  {author}"
                             f"{s.get('reason') or ''}").rstrip())
    return 0


@silence_group.command("remove")
@click.argument("silence_id")
@config_options
def silence_remove(silence_id, **kwargs):
    """Remove the silence SILENCE_ID (see `silence list`)."""
    config = load_config(parsed_options(**kwargs))
    try:
        removed = silences.remove(config["paths"]["state"], silence_id, time.time())
    except (state.StateError, OSError) as exc:
        raise _silences_not_saved(config["paths"]["state"], exc) from None
    if not removed:
        raise click.BadParameter(f"no active silence with id {silence_id}", param_hint="SILENCE_ID")
    click.echo(f"removed silence {silence_id}")
    return 0


def _silences_not_saved(folder: str, exc: Exception) -> click.ClickException:
    """One line for a state folder that cannot be written (exit 3), not a traceback."""
    reason = str(exc) if isinstance(exc, StateError) else f"cannot write in {getattr(exc, 'filename', None) or folder}: {exc.strerror or exc}"
    return click.ClickException(f"silences not saved: {reason}")


def _when(ts: float) -> str:
    try:
        return datetime.fromtimestamp(ts).astimezone().isoformat(timespec="minutes")
    except (OverflowError, ValueError, OSError):  # a hand-edited silences.json: until = 1e300
        return "far future" if ts > 0 else "far past"

