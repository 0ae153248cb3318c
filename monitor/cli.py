"""The command line: a thin click shell over config loading and `jobs.run_job`.

Usage and config errors exit 3 with one line on stderr (click's own 2 would read as
CRITICAL to Nagios-style tooling); the exit code of a run is its worst check.
"""

import os
import sys

import click

from monitor.config import ConfigError
from monitor.jobs import Options

EXIT_UNKNOWN = 3


def _common_option_list(from_env: bool = True) -> list:
    """The common options of SPEC: Commands. Before the subcommand they read no
    environment variable (the subcommand reads MONITOR_CONFIG and MONITOR_ENV itself)."""
    def env(name):
        return {"envvar": name} if from_env else {}

    return [
        click.option("--config", "config", metavar="PATH", **env("MONITOR_CONFIG"),
                     help="Config file (env MONITOR_CONFIG; default ./monitor.toml, then /etc/monitor/monitor.toml)."),
        click.option("--env", "env", metavar="NAME", **env("MONITOR_ENV"),
                     help="Environment profile, merged from [env.NAME] (env MONITOR_ENV)."),
        click.option("--format", "fmt", type=click.Choice(["json", "text"]),
                     help="Output format (default: text on a terminal, else json)."),
        click.option("--quiet", "-q", is_flag=True, help="Print nothing; the exit code says it all."),
        click.option("--no-notify", is_flag=True, help="Evaluate and log, send nothing."),
        click.option("--dry-run", is_flag=True, help="Print the messages that would be sent instead of sending them."),
        click.option("--verbose", "-v", count=True, help="Log to stderr too (-vv: debug, HTTP libraries included)."),
    ]


def _decorate(func, decorators):
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


def common_options(func):
    """The options every job accepts after its name (SPEC: Commands)."""
    return _decorate(func, _common_option_list())


_COMMON = ("config", "env", "fmt", "quiet", "no_notify", "dry_run", "verbose")


def _with_group_options(kwargs: dict) -> dict:
    """Fill the common options the subcommand was not given from those typed before it
    (`monitor --config X health`); the ones after the subcommand win."""
    from click.core import ParameterSource

    ctx = click.get_current_context(silent=True)
    if ctx is None or ctx.parent is None:
        return kwargs
    root = ctx.find_root()
    merged = dict(kwargs)
    for name in _COMMON:
        if root.get_parameter_source(name) != ParameterSource.COMMANDLINE:
            continue
        if name in kwargs and ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE:
            continue
        merged[name] = root.params[name]
    return merged


def _options(**kwargs) -> Options:
    kwargs = _with_group_options(kwargs)
    return Options(config=kwargs.get("config"), env=kwargs.get("env"), format=kwargs.get("fmt"),
                   quiet=kwargs.get("quiet", False), no_notify=kwargs.get("no_notify", False),
                   dry_run=kwargs.get("dry_run", False), verbose=kwargs.get("verbose", 0),
                   only=kwargs.get("only"), textfile_dir=kwargs.get("textfile_dir"))


def _load_config(opts: Options) -> dict:
    from monitor import config, safety

    loaded = config.load(opts.config, opts.env)
    safety.use_config(loaded["source"])  # its owner owns the folders a root run creates
    return loaded


def _config_options(func):
    """--config and --env for the commands that are not jobs."""
    func = click.option("--env", "env", envvar="MONITOR_ENV", metavar="NAME",
                        help="Environment profile to apply.")(func)
    return click.option("--config", "config", envvar="MONITOR_CONFIG", metavar="PATH",
                        help="Config file.")(func)


def _kinds(ctx, param, value):
    if not value:
        return None
    from monitor.checks import HEALTH_KINDS

    kinds = {k.strip() for k in value.split(",") if k.strip()}
    unknown = sorted(kinds - set(HEALTH_KINDS))
    if unknown or not kinds:
        raise click.BadParameter(f"unknown kind {', '.join(unknown) or '(empty)'}; "
                                 f"expected {', '.join(HEALTH_KINDS)}")
    return kinds


def _group_options(func):
    """The common options, also accepted before the subcommand."""
    return _decorate(func, _common_option_list(from_env=False))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="monitor", message="%(prog)s %(version)s")
@_group_options
def cli(**kwargs):
    """Monitoring and alerting for the web3 opportunity scraper and its host.

    Exit codes: 0 ok, 1 warning, 2 critical, 3 unknown or the run itself failed.
    Common options go after the subcommand or before it (`monitor --config X health`);
    after it wins.
    """


def _say_no_config(command: str, opts: Options, config: dict) -> None:
    """Run from the wrong folder, all would look fine: say there is no config (not under
    --quiet). Said after the run, so a run that could not take its lock says only that."""
    if config.get("source") or opts.quiet:
        return
    from monitor import config as config_mod

    searched = ", ".join(os.path.abspath(p) for p in config_mod.SEARCH_PATHS)
    click.echo(f"monitor {command}: no config found (no --config or $MONITOR_CONFIG; searched {searched}): "
               "host checks only", err=True)


@cli.command()
@common_options
@click.option("--only", callback=_kinds, metavar="KIND[,KIND]",
              help="Run only these kinds of checks (system, vault, scraper, quota).")
@click.option("--textfile-dir", metavar="DIR",
              help="Write monitor_health.prom here for node_exporter's textfile collector.")
def health(**kwargs):
    """Check the host and services now; print the verdict (cron: every 5 minutes)."""
    from monitor.checks import health_checks
    from monitor.jobs import run_job

    opts = _options(**kwargs)
    config = _load_config(opts)
    outcome = run_job("health", opts, config, lambda cfg, counters, o: health_checks(cfg, counters, o.only))
    _say_no_config("health", opts, config)
    return outcome


@cli.command("backup-check")
@common_options
@click.option("--textfile-dir", metavar="DIR",
              help="Write monitor_backup-check.prom here for node_exporter's textfile collector.")
def backup_check(**kwargs):
    """Check that every backup set is there, fresh, whole and not shrinking (cron: every 6 h)."""
    from monitor.checks import backup_checks
    from monitor.jobs import run_job

    opts = _options(**kwargs)
    config = _load_config(opts)
    outcome = run_job("backup-check", opts, config, lambda cfg, cache, o: backup_checks(cfg, cache))
    _say_no_config("backup-check", opts, config)
    return outcome


@cli.command("daily-report")
@common_options
@click.option("--date", "day", metavar="YYYY-MM-DD", help="Report this day (default: yesterday in report.timezone).")
@click.option("--force", is_flag=True, help="Send again even if this day was already reported.")
@click.option("--textfile-dir", metavar="DIR",
              help="Write monitor_daily-report.prom here for node_exporter's textfile collector.")
def daily_report(day, force, **kwargs):
    """Yesterday's business figures, errors and health in one message (cron: 09:00)."""
    from monitor.report.daily import daily_checks
    from monitor.jobs import run_job

    opts = _options(**kwargs)
    config = _load_config(opts)
    build, finish = daily_checks(config, day, force, opts)
    outcome = run_job("daily-report", opts, config, build, finish)
    _say_no_config("daily-report", opts, config)
    return outcome


@cli.command("cron")
@_config_options
def cron_lines(**kwargs):
    """Print the crontab lines for this installation (absolute paths; paste into `crontab -e`)."""
    from monitor import config as config_mod

    opts = _options(**kwargs)
    config = _load_config(opts)  # refuse to print lines for a config that does not load
    path = config_mod.find_config_file(opts.config)
    script = os.path.join(os.path.dirname(os.path.abspath(sys.executable)), "monitor")
    if not os.path.exists(script):
        import shutil

        script = shutil.which("monitor") or script
    args = f" --config {_cron_word(path, '--config')}" if path else ""
    if opts.env:  # config.build refused any name that is not [A-Za-z0-9_.-]+
        args += f" --env {_cron_word(opts.env, '--env')}"
    # Without a config file, paths are relative to the working directory: pin it.
    prefix = "" if path else f"cd {_cron_word(os.getcwd(), 'the working directory')} && "
    script = _cron_word(script, "the monitor script")
    from monitor.text import printable

    click.echo("# monitor: health every 5 minutes, backups every 6 hours, the daily report at 09:00.\n"
               "# cron reads these times in the system time zone; cronie also honours a\n"
               "# CRON_TZ=Europe/Paris line above them. --quiet: cron mails only real problems.")
    for line in _cron_secret_lines(config):
        click.echo(printable(line))  # a line break in a path would start a crontab line of its own
    click.echo(f"*/5 * * * * {prefix}{script} health --quiet{args}")
    click.echo(f"0 */6 * * * {prefix}{script} backup-check --quiet{args}")
    click.echo(f"0 9 * * * {prefix}{script} daily-report --quiet{args}")
    return 0


def _cron_word(text: str, what: str) -> str:
    """`text` as one word of a crontab command: shell-quoted, `%` escaped for cron.

    cron turns an unescaped `%` into a line break and feeds the rest to stdin, and
    removes the backslash of `\\%`, before /bin/sh sees the line: each `%` is written
    `\\%` outside the shell quotes. A line break cannot be written in a crontab line.
    """
    import shlex

    if any(char in text for char in "\n\r\0"):
        from monitor.text import printable

        raise ConfigError(f"cron: {what} {printable(text)} holds a line break, which a crontab line cannot hold")
    return "\\%".join(shlex.quote(part) if part else "" for part in text.split("%"))


def _cron_secret_lines(config: dict) -> list[str]:
    """Comment lines on getting the secrets to cron, whose environment is almost empty.

    A token exported in the operator's shell is not there: each run would keep its
    messages in the outbox and say so on stderr. Never prints a token.
    """
    import stat

    lines = []
    tg = config.get("telegram")
    if tg and tg["chat_ids"]:
        if tg["token_file"]:
            path = tg["token_file"]
            lines.append(f"# Telegram: the bot token is read from {path} (chmod 600, owned by this crontab's user).")
            try:
                mode = os.stat(path).st_mode
                if mode & 0o077:
                    lines.append(f"# WARNING: {path} is readable by group or others "
                                 f"(mode {stat.S_IMODE(mode):04o}): chmod 600 {path}")
            except OSError as exc:
                lines.append(f"# WARNING: {path}: {exc.strerror}: no alert can be sent until it is there")
        elif tg["token_vault"]:
            lines.append(f"# Telegram: the bot token is read from Vault ({tg['token_vault']}) with the Vault token;"
                         " a copy of the last one read is kept")
            lines.append(f"# in {config['paths']['state']} (0600) for when Vault is sealed or down.")
        else:
            name = tg["token_env"] or "TELEGRAM_BOT_TOKEN"
            lines += [f"# Telegram: cron runs these jobs with an almost empty environment: ${name}",
                      "# exported in your shell is not there, and every alert would wait in the outbox.",
                      '# Recommended: telegram.token_file = "/etc/monitor/bot.token" (chmod 600) in the',
                      "# config. Or uncomment this line with the token (a crontab is readable by its owner only):",
                      f"# {name}=123456789:replace-with-the-bot-token"]
    vault = config.get("vault")
    if vault and not vault.get("token_file") and vault.get("token_env"):
        name = vault["token_env"]
        lines += [f"# Vault: ${name} is not in cron's environment either: set vault.token_file (chmod 600)",
                  f"# or uncomment this line with the Vault token: {name}=replace-with-the-vault-token"]
    return lines


@cli.group("render")
def render_group():
    """Print the Prometheus rules or the Grafana dashboard for this config's thresholds."""


@render_group.command("rules")
@_config_options
def render_rules(**kwargs):
    """Print prometheus_rules.yml for the config's thresholds (the committed file is the defaults')."""
    from monitor.fleet import rules

    click.echo(rules.rules_yaml(_load_config(_options(**kwargs))), nl=False)
    return 0


@render_group.command("dashboard")
@_config_options
def render_dashboard(**kwargs):
    """Print grafana_dashboard.json with threshold steps from the config."""
    from monitor.fleet import dashboard

    click.echo(dashboard.dashboard_json(_load_config(_options(**kwargs))), nl=False)
    return 0


@cli.group("config")
def config_group():
    """Inspect the configuration."""


@config_group.command("example")
def config_example():
    """Print a sample config (every key, its help and default), as in monitor.example.toml."""
    from monitor.config.example import example_toml

    click.echo(example_toml(), nl=False)
    return 0


@config_group.command("check")
@click.option("--config", "config", envvar="MONITOR_CONFIG", metavar="PATH", help="Config file to check.")
@click.option("--env", "env", envvar="MONITOR_ENV", metavar="NAME", help="Environment profile to apply.")
@click.option("--format", "fmt", type=click.Choice(["json", "text"]), help="Output format.")
def config_check(**kwargs):
    """Validate the config; print the effective config (secrets masked) or every error."""
    from monitor import config as config_mod
    from monitor import output

    opts = _options(**kwargs)
    path = config_mod.find_config_file(opts.config)
    effective = _load_config(opts)
    if path is not None:  # every profile must be valid, not just the one in use today
        raw = config_mod.read_toml(path)
        for name in config_mod.profiles(raw):
            if name != effective["environment"]:
                try:
                    config_mod.build(raw, name, os.path.dirname(path), path)
                except ConfigError as exc:
                    raise ConfigError([f"env.{name}: {e}" for e in exc.errors]) from None
    for warning in config_mod.exposure_warnings(path, effective):
        click.echo(f"warning: {warning}", err=True)
    shown = config_mod.display(effective)
    shown["secrets"] = config_mod.secret_sources(effective)
    missing = _bot_token_problem(effective, shown["secrets"])
    fmt = opts.format or ("text" if sys.stdout.isatty() else "json")
    if fmt == "json":
        output.write_stdout(output.to_json(shown))
    else:
        source = effective["source"] or "no config file: built-in defaults"
        output.write_stdout(f"config ok: {source} (environment {effective['environment']})\n"
                            + "\n".join(output.flatten(shown)))
    from monitor import safety
    from monitor.text import printable

    problems = {key: safety.problem(effective["paths"][key]) for key in ("state", "logs")}
    refused = [f"paths.{key}: {why}" for key, why in problems.items() if why]
    for line in refused:  # what a root run would refuse (monitor/safety.py)
        click.echo(printable(line), err=True)
    if missing:
        click.echo(f"telegram: no usable bot token: {missing}", err=True)
    return 1 if missing or refused else 0


def _bot_token_problem(config: dict, secrets: dict) -> str | None:
    """Try the bot token's sources as a run would; say in `secrets` where it comes from.

    Return every source tried and why it failed when no token resolves (messages
    would wait in the outbox), or None. Never the token itself.
    """
    tg = config.get("telegram")
    if not tg or not tg["chat_ids"]:
        return None
    from monitor.alerts.notify import TOKEN_COPY, resolve_token

    token, source = resolve_token(config)
    if token:
        secrets["telegram.token"] = f"found ({source})"
        return None
    copy = os.path.join(config["paths"]["state"], TOKEN_COPY)
    if tg["token_vault"] and os.path.exists(copy):
        source += f" (until Vault answers, runs use the copy of the last token read from it: {copy})"
    else:
        source += "; runs keep their messages in the outbox until a token resolves"
    secrets["telegram.token"] = f"MISSING: {source}"
    return source


@cli.group("notify")
def notify_group():
    """Telegram notifications."""


@notify_group.command("test")
@_config_options
def notify_test(**kwargs):
    """Send "ℹ️ test from HOST (ENV)" to every chat; exit 0 only if all got it."""
    from monitor.jobs import host_name
    from monitor.alerts.notify import resolve_token
    from monitor.alerts.telegram import TelegramClient

    config = _load_config(_options(**kwargs))
    tg = config.get("telegram")
    if not tg or not tg["chat_ids"]:
        raise ConfigError("telegram.chat_ids: no chat to send to (add a [telegram] section with chat_ids)")
    token, source = resolve_token(config)
    if not token:
        raise ConfigError(f"telegram: {source}")
    client = TelegramClient(token, tg["api_url"], tg["timeout"], max_wait=10.0)
    import html

    text = f"ℹ️ test from <b>{html.escape(host_name())}</b> ({html.escape(config['environment'])})"
    failures = 0
    for chat in tg["chat_ids"]:
        delivery = client.send(chat, text, disable_notification=True)
        where = chat if not delivery.migrated_from else f"{delivery.migrated_from} -> {delivery.chat_id} (update the config)"
        click.echo(f"{'ok    ' if delivery.ok else 'FAILED'} chat {where}" + ("" if delivery.ok else f": {delivery.error}"))
        failures += not delivery.ok
    return 1 if failures else 0


@cli.group("silence")
def silence_group():
    """Mute alerts of matching checks for a while (they are still evaluated and logged)."""


def _positive_duration(ctx, param, value):
    from monitor.units import parse_duration

    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    if seconds <= 0:
        raise click.BadParameter(f'expected a duration above zero, got "{value}"')
    return seconds


@silence_group.command("add")
@click.argument("pattern")
@click.option("--for", "duration", required=True, callback=_positive_duration, metavar="DURATION",
              help='How long, e.g. "2h", "1d".')
@click.option("--reason", default="", help="Why, for whoever reads `silence list`.")
@_config_options
def silence_add(pattern, duration, reason, **kwargs):
    """Silence checks whose id matches PATTERN (a glob: 'disk:*', 'scraper:uniswap')."""
    import time

    from monitor import state
    from monitor.alerts import silences
    from monitor.checks import known_check_ids

    config = _load_config(_options(**kwargs))
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
    import fnmatch

    note = "" if any(fnmatch.fnmatchcase(c, pattern) for c in known) else \
        " (note: it matches no check known today)"
    click.echo(f"silenced {pattern} until {_when(silence['until'])} [id {silence['id']}]{note}")
    return 0


@silence_group.command("list")
@_config_options
def silence_list(**kwargs):
    """List active silences."""
    import time

    from monitor import state
    from monitor.alerts import silences

    config = _load_config(_options(**kwargs))
    try:
        active = silences.load(config["paths"]["state"], time.time())
    except (state.StateError, OSError) as exc:
        where = f"{exc.filename}: {exc.strerror}" if isinstance(exc, OSError) and exc.filename else exc
        raise click.ClickException(f"cannot read silences: {where}") from None
    if not active:
        click.echo("no active silences")
    for s in active:
        click.echo(f"{s['id']}  {s['pattern']:<24} until {_when(s['until'])}  {s.get('reason', '')}".rstrip())
    return 0


@silence_group.command("remove")
@click.argument("silence_id")
@_config_options
def silence_remove(silence_id, **kwargs):
    """Remove the silence SILENCE_ID (see `silence list`)."""
    import time

    from monitor import state
    from monitor.alerts import silences

    config = _load_config(_options(**kwargs))
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
    from monitor.state import StateError

    reason = str(exc) if isinstance(exc, StateError) else f"cannot write in {getattr(exc, 'filename', None) or folder}: {exc.strerror or exc}"
    return click.ClickException(f"silences not saved: {reason}")


def _when(ts: float) -> str:
    from datetime import datetime

    return datetime.fromtimestamp(ts).astimezone().isoformat(timespec="minutes")


def main(argv=None) -> int:
    """Entry point of the `monitor` script: run the CLI, map every failure to an exit code."""
    from monitor.state import LockHeld

    try:
        result = cli.main(args=argv, prog_name="monitor", standalone_mode=False)
    except click.exceptions.Exit as exc:  # --help, --version
        return exc.exit_code
    except click.exceptions.NoArgsIsHelpError as exc:  # plain `monitor`: show the help
        print(exc.ctx.get_help(), file=sys.stderr)
        return EXIT_UNKNOWN
    except click.ClickException as exc:
        hint = ""
        ctx = getattr(exc, "ctx", None)
        if ctx is not None:
            hint = f" (see '{ctx.command_path} --help')"
        print(f"monitor: {exc.format_message()}{hint}", file=sys.stderr)
        return EXIT_UNKNOWN
    except click.exceptions.Abort:
        print("monitor: aborted", file=sys.stderr)
        return EXIT_UNKNOWN
    except ConfigError as exc:
        for error in exc.errors:
            print(f"config error: {error}", file=sys.stderr)
        return EXIT_UNKNOWN
    except LockHeld as exc:
        print(f"monitor: {exc}", file=sys.stderr)
        return EXIT_UNKNOWN
    except KeyboardInterrupt:
        print("monitor: interrupted", file=sys.stderr)
        return EXIT_UNKNOWN
    if hasattr(result, "exit_code"):  # a job's Outcome
        return result.exit_code
    return result if isinstance(result, int) else 0


def entry() -> None:
    """The `monitor` script: run, flush, and leave without tearing the interpreter down.

    Once the result is out a cron run's work is done: every file it wrote is already
    on disk (os.write, fsync), so module teardown and garbage collection would only
    add 5-10 ms to each run, and a check thread stuck in the kernel (a dead NFS
    mount) could hold up an orderly shutdown.
    """
    code = main()
    safety = sys.modules.get("monitor.safety")
    if safety:  # root's files in a service user's folders (`sudo monitor silence add` too)
        safety.hand_over()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


if __name__ == "__main__":
    entry()
