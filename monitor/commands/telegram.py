"""`monitor telegram poll|setup`: answer the chats now, and register the bot's command menu."""

import click

from monitor import state
from monitor.cli import config_options, load_config, parsed_options
from monitor.config import ConfigError

POLL_LOCK_WAIT = 1.0  # s: a job holding the notify lock is answering the chats itself


@click.group("telegram")
def telegram_group():
    """Commands from the chats (/status, /ack, /mute ...) and the bot's setup."""


def _telegram(config: dict) -> dict:
    tg = config.get("telegram")
    if not tg or not tg["chat_ids"]:
        raise ConfigError("telegram.chat_ids: no chat to talk to (add a [telegram] section with chat_ids)")
    return tg


@telegram_group.command("poll")
@config_options
@click.option("--verbose", "-v", count=True, help="Log to stderr too.")
def telegram_poll(verbose, **kwargs):
    """Read and answer what the chats said, and deliver the outbox (cron: every minute).

    Every run of health, backup-check and daily-report does this too; run from cron
    every minute, replies come within a minute instead of five. Prints nothing when
    all went well (logs/telegram.log says what was handled).
    """
    import logging

    from monitor.alerts.notify import notify
    from monitor.jobs import host_name
    from monitor.logs import close_log, open_log

    log = logging.getLogger("monitor")

    config = load_config(parsed_options(**kwargs))
    _telegram(config)
    folder = config["paths"]["state"]
    try:
        state.ensure_folder(folder)
    except (state.StateError, OSError) as exc:
        raise click.ClickException(f"cannot use the state folder {folder}: {exc}") from None
    handler = open_log(config["paths"]["logs"], "telegram", verbose)
    try:
        # No checks: the alert state of every command is kept as it is. A job talking to
        # Telegram now does this poll's work: no wait, nothing to say (cron would mail it).
        summary = notify(config, "telegram-poll", [], set(), host_name(config), wait=POLL_LOCK_WAIT)
    except state.LockHeld as exc:
        log.info("telegram poll skipped: %s", exc, extra={"event": "notify_lock"})
        return 0
    finally:
        close_log()
    problems = [p for p in (summary.get("state_error"), handler.error) if p]
    for problem in problems:
        click.echo(f"monitor telegram poll: {problem}", err=True)
    return 1 if problems else 0


@telegram_group.command("setup")
@config_options
def telegram_setup(**kwargs):
    """Register the command menu (setMyCommands) and list the chats and users the bot has seen.

    Send the bot a message first (in private, or /help in the group), so that its ids
    show here: copy them into telegram.chat_ids and telegram.allowed_users.
    """
    from monitor.alerts import bot, bot_text
    from monitor.alerts.bot_token import resolve_token
    from monitor.alerts.telegram import TelegramClient

    config = load_config(parsed_options(**kwargs))
    tg = config.get("telegram")
    if not tg:  # chat_ids may still be empty: this is how to find them
        raise ConfigError("telegram: no [telegram] section (add one with the bot token's source)")
    token, source = resolve_token(config)
    if not token:
        raise ConfigError(f"telegram: {source}")
    client = TelegramClient(token, tg["api_url"], tg["timeout"])
    me = client.call("getMe", {})
    if not me.ok:
        raise click.ClickException(f"the bot token was not accepted: {me.describe()}")
    name = me.body["result"].get("username") if isinstance(me.body.get("result"), dict) else None
    click.echo(f"bot @{bot_text.clip(name or '?')}")
    menu = [{"command": command, "description": f"{args} — {what}" if args else what}
            for command, args, what in bot_text.COMMANDS]
    answer = client.call("setMyCommands", {"commands": menu})
    if not answer.ok:
        raise click.ClickException(f"setMyCommands failed: {answer.describe()}")
    click.echo("command menu registered: " + " ".join(f"/{c['command']}" for c in menu))
    # No offset: nothing is confirmed, so the next run still handles these updates.
    seen = client.call("getUpdates", {"timeout": 0, "limit": bot.MAX_UPDATES,
                                      "allowed_updates": ["message", "callback_query"]},
                       max_bytes=bot.UPDATES_BYTES)
    if seen.status == 409 and "webhook" in str(seen.body.get("description") or "").lower():
        raise click.ClickException("the bot has a webhook set (409): remove it with "
                                   "https://api.telegram.org/bot<token>/deleteWebhook, then run this again")
    if seen.status == 409:
        raise click.ClickException(f"another program reads this bot's updates ({seen.describe()}): "
                                   "stop it, or give this host a bot of its own, then run this again")
    if not seen.ok or not isinstance(seen.body.get("result"), list):
        raise click.ClickException(f"getUpdates failed: {seen.describe()}")
    chats, users = {}, {}
    for raw in seen.body["result"]:
        try:
            update = bot.Incoming(raw)
        except (ValueError, TypeError, AttributeError):
            continue
        chats[update.chat_id] = (f"{update.chat_type} {update.chat_name!r}", update.chat_username)
        if update.user_id:
            users[update.user_id] = update.who
    if not chats:
        click.echo("no messages waiting: send the bot a message (or /help in the group) and run this again "
                   "(a monitor run may have read them already: see logs/*.log, event telegram_stranger)")
    configured_chats = {str(c).lower() for c in tg["chat_ids"]}
    allowed = {str(u).lower() for u in tg.get("allowed_users") or []}
    for chat, (what, username) in sorted(chats.items()):
        named = chat in configured_chats or bool(username) and f"@{username}".lower() in configured_chats
        note = "in telegram.chat_ids" if named else "not in telegram.chat_ids"
        click.echo(f"chat {chat:<16} {what:<32} {note}")
    for user, who in sorted(users.items()):
        note = "in telegram.allowed_users" if user in allowed or who.lower() in allowed else ""
        click.echo(f"user {user:<16} {who:<32} {note}".rstrip())
    return 0
