"""`monitor cron`: the crontab lines of this installation, from the `jobs.JOBS` records."""

import os
import stat
import sys

import click

from monitor import config as config_mod
from monitor.cli import config_options, load_config, parsed_options
from monitor.config import ConfigError
from monitor.jobs import JOBS
from monitor.text import printable


@click.command("cron")
@config_options
def cron_lines(**kwargs):
    """Print the crontab lines for this installation (absolute paths; paste into `crontab -e`)."""
    opts = parsed_options(**kwargs)
    config = load_config(opts)  # refuse to print lines for a config that does not load
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

    click.echo("# monitor: health every 5 minutes, backups every 6 hours, the daily report at 09:00.\n"
               "# cron reads these times in the system time zone; cronie also honours a\n"
               "# CRON_TZ=Europe/Paris line above them. --quiet: cron mails only real problems.")
    for line in _cron_secret_lines(config):
        click.echo(printable(line))  # a line break in a path would start a crontab line of its own
    for line in job_lines(f"{prefix}{script}", args):
        click.echo(line)
    if (config.get("telegram") or {}).get("chat_ids"):
        click.echo(poll_line(f"{prefix}{script}", args))
    return 0


def poll_line(command: str, args: str = "") -> str:
    """The optional `monitor telegram poll` line, commented out: replies within a minute, not five."""
    return ("# Optional: answer /status, /ack, /mute within a minute instead of five:\n"
            f"# * * * * * {command} telegram poll{args}")


def job_lines(command: str, args: str = "") -> list[str]:
    """One crontab line per job: its time fields, `command` (the script, already a
    crontab word), the job's name, --quiet, and `args` (already crontab words)."""
    return [f"{job.cron} {command} {job.name} --quiet{args}" for job in JOBS.values()]


def _cron_word(text: str, what: str) -> str:
    """`text` as one word of a crontab command: shell-quoted, `%` escaped for cron.

    cron turns an unescaped `%` into a line break and feeds the rest to stdin, and
    removes the backslash of `\\%`, before /bin/sh sees the line: each `%` is written
    `\\%` outside the shell quotes. A line break cannot be written in a crontab line.
    """
    import shlex

    if any(char in text for char in "\n\r\0"):
        raise ConfigError(f"cron: {what} {printable(text)} holds a line break, which a crontab line cannot hold")
    return "\\%".join(shlex.quote(part) if part else "" for part in text.split("%"))


def _cron_secret_lines(config: dict) -> list[str]:
    """Comment lines on getting the secrets to cron, whose environment is almost empty.

    A token exported in the operator's shell is not there: each run would keep its
    messages in the outbox and say so on stderr. Never prints a token.
    """
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
    if vault and not vault.get("scraper_token_file") and vault.get("scraper_token_env"):
        name = vault["scraper_token_env"]
        lines += [f"# Vault: ${name} (the scraper's token) is not in cron's environment: set "
                  "vault.scraper_token_file (chmod 600)",
                  f"# or uncomment this line with it: {name}=replace-with-the-scraper-token"]
    return lines

