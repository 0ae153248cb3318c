"""`monitor config ...`: look at the configuration (a new subcommand: one more
`@config_group.command`)."""

import os
import sys

import click

from monitor import config as config_mod, output, safety
from monitor.cli import load_config, parsed_options
from monitor.config import ConfigError
from monitor.text import printable


@click.group("config")
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
    opts = parsed_options(**kwargs)
    path = config_mod.find_config_file(opts.config)
    effective = load_config(opts)
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
    from monitor.alerts.bot_token import TOKEN_COPY, resolve_token

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

