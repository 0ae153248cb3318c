"""The command line: a thin click shell over config loading and `jobs.run_job`.

The jobs' commands and the options they share live here; the other commands live in
`monitor/commands/`, one module per group, imported only when named (`COMMANDS`).

Usage and config errors exit 3 with one line on stderr (click's own 2 would read as
CRITICAL to Nagios-style tooling); the exit code of a run is its worst check.
"""

import importlib
import os
import sys

import click

from monitor import checks, config, output, safety
from monitor.config import SEARCH_PATHS, ConfigError
from monitor.jobs import JOBS, Options, run_job
from monitor.state import LockHeld

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
        click.option("--format", "fmt", type=click.Choice(["json", "text", "nagios"]),
                     help="Output format (default: text on a terminal, else json; nagios: the plugin API, for NRPE)."),
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


def parsed_options(**kwargs) -> Options:
    """The `Options` of a command from what click parsed, with those typed before it."""
    kwargs = _with_group_options(kwargs)
    return Options(config=kwargs.get("config"), env=kwargs.get("env"), format=kwargs.get("fmt"),
                   quiet=kwargs.get("quiet", False),
                   no_notify=kwargs.get("no_notify", False) or bool(kwargs.get("chart")),  # --chart sends nothing
                   dry_run=kwargs.get("dry_run", False), verbose=kwargs.get("verbose", 0),
                   only=kwargs.get("only"), textfile_dir=kwargs.get("textfile_dir"),
                   day=kwargs.get("day"), force=kwargs.get("force", False), chart=kwargs.get("chart"))


def load_config(opts: Options) -> dict:
    loaded = config.load(opts.config, opts.env)
    safety.use_config(loaded["source"])  # its owner owns the folders a root run creates
    return loaded


def config_options(func):
    """--config and --env for the commands that are not jobs."""
    func = click.option("--env", "env", envvar="MONITOR_ENV", metavar="NAME",
                        help="Environment profile to apply.")(func)
    return click.option("--config", "config", envvar="MONITOR_CONFIG", metavar="PATH",
                        help="Config file.")(func)


def _kinds(ctx, param, value):
    if not value:
        return None
    known = checks.kinds("health")
    wanted = {k.strip() for k in value.split(",") if k.strip()}
    unknown = sorted(wanted - set(known))
    if unknown or not wanted:
        raise click.BadParameter(f"unknown kind {', '.join(unknown) or '(empty)'}; "
                                 f"expected {', '.join(known)}")
    return wanted


def _group_options(func):
    """The common options, also accepted before the subcommand."""
    return _decorate(func, _common_option_list(from_env=False))


# The commands that are not jobs (monitor/commands/), imported when named or listed.
COMMANDS = {
    "config": "monitor.commands.config:config_group",
    "cron": "monitor.commands.cron:cron_lines",
    "notify": "monitor.commands.notify:notify_group",
    "render": "monitor.commands.render:render_group",
    "silence": "monitor.commands.silence:silence_group",
    "schema": "monitor.commands.schema:schema_command",
    "telegram": "monitor.commands.telegram:telegram_group",
}


class _Root(click.Group):
    """The `monitor` group: a cron run of a job never imports the other commands."""

    def list_commands(self, ctx):
        return sorted({*self.commands, *COMMANDS})

    def get_command(self, ctx, cmd_name):
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            module, _, name = COMMANDS[cmd_name].partition(":")
            self.add_command(getattr(importlib.import_module(module), name), cmd_name)
        return super().get_command(ctx, cmd_name)

    def resolve_command(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in COMMANDS:
            for name in COMMANDS:  # a typo: "did you mean" weighs every command
                self.get_command(ctx, name)
        return super().resolve_command(ctx, args)


@click.group(cls=_Root, context_settings={"help_option_names": ["-h", "--help"]})
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

    searched = ", ".join(os.path.abspath(p) for p in SEARCH_PATHS)
    click.echo(f"monitor {command}: no config found (no --config or $MONITOR_CONFIG; searched {searched}): "
               "host checks only", err=True)


def _run(name: str, kwargs: dict):
    """Run the job `name` (`jobs.JOBS`) with the options click parsed."""
    opts = parsed_options(**kwargs)
    config = load_config(opts)
    outcome = run_job(JOBS[name], opts, config)
    _say_no_config(name, opts, config)
    return outcome


@cli.command()
@common_options
@click.option("--only", callback=_kinds, metavar="KIND[,KIND]",
              help=f"Run only these kinds of checks ({', '.join(checks.HEALTH_KINDS)}).")
@click.option("--textfile-dir", metavar="DIR",
              help="Write monitor_health.prom here for node_exporter's textfile collector.")
def health(**kwargs):
    """Check the host and services now; print the verdict (cron: every 5 minutes)."""
    return _run("health", kwargs)


@cli.command("backup-check")
@common_options
@click.option("--textfile-dir", metavar="DIR",
              help="Write monitor_backup-check.prom here for node_exporter's textfile collector.")
def backup_check(**kwargs):
    """Check that every backup set is there, fresh, whole and not shrinking (cron: every 6 h)."""
    return _run("backup-check", kwargs)


@cli.command("daily-report")
@common_options
@click.option("--date", "day", metavar="YYYY-MM-DD", help="Report this day (default: yesterday in report.timezone).")
@click.option("--force", is_flag=True, help="Send again even if this day was already reported.")
@click.option("--textfile-dir", metavar="DIR",
              help="Write monitor_daily-report.prom here for node_exporter's textfile collector.")
@click.option("--chart", metavar="FILE", help="Write the report's chart (PNG) to FILE and send nothing.")
def daily_report(**kwargs):
    """Yesterday's business figures, errors and health in one message (cron: 09:00)."""
    return _run("daily-report", kwargs)


def main(argv=None) -> int:
    """Entry point of the `monitor` script: run the CLI, map every failure to an exit code."""
    args = sys.argv[1:] if argv is None else list(argv)
    if "--format=nagios" not in args and ("--format", "nagios") not in zip(args, args[1:]):
        return _main(argv)
    # A Nagios plugin that fails must still say why on stdout (NRPE returns stdout
    # alone): a usage, config or lock error becomes the UNKNOWN status line.
    from monitor.nagios import Remembered

    stderr = sys.stderr = Remembered(sys.stderr)
    try:
        code = _main(argv)
    finally:
        sys.stderr = stderr.stream
    if code == EXIT_UNKNOWN and stderr.first and not output.written:
        output.write_stdout(stderr.unknown_line())
    return code


def _main(argv=None) -> int:
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
