"""`monitor notify test`: one message to every configured chat."""

import click

from monitor.cli import config_options, load_config, parsed_options
from monitor.config import ConfigError
from monitor.jobs import host_name


@click.group("notify")
def notify_group():
    """Telegram notifications."""


@notify_group.command("test")
@config_options
def notify_test(**kwargs):
    """Send "ℹ️ test from HOST (ENV)" to every chat; exit 0 only if all got it."""
    from monitor.alerts.bot_token import resolve_token
    from monitor.alerts.telegram import TelegramClient

    config = load_config(parsed_options(**kwargs))
    tg = config.get("telegram")
    if not tg or not tg["chat_ids"]:
        raise ConfigError("telegram.chat_ids: no chat to send to (add a [telegram] section with chat_ids)")
    token, source = resolve_token(config)
    if not token:
        raise ConfigError(f"telegram: {source}")
    client = TelegramClient(token, tg["api_url"], tg["timeout"], max_wait=10.0)
    import html

    text = f"ℹ️ test from <b>{html.escape(host_name(config))}</b> ({html.escape(config['environment'])})"
    failures = 0
    for chat in tg["chat_ids"]:
        delivery = client.send(chat, text, disable_notification=True)
        where = chat if not delivery.migrated_from else f"{delivery.migrated_from} -> {delivery.chat_id} (update the config)"
        click.echo(f"{'ok    ' if delivery.ok else 'FAILED'} chat {where}" + ("" if delivery.ok else f": {delivery.error}"))
        failures += not delivery.ok
    return 1 if failures else 0

