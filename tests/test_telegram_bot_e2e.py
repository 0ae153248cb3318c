"""Commands from the phone end to end (issue 16): the installed `monitor` killed with -9 between
handling an update and saving its offset, a webhook conflict as cron would mail it, and the
`monitor telegram poll|setup` commands, against the loopback Bot API stand-in."""

import json
import signal
import subprocess
import time

from monitor.alerts.telegram import html_to_plain
from tests.conftest import MONITOR, clean_env
from tests.telegram_standin import HANG
from tests.test_alerts_e2e import CHAT, SECRET, TOKEN, host, telegram, web  # noqa: F401 - fixtures

USER = 111


def test_kill_9_while_answering_commands_neither_loses_nor_doubles_an_answer(host, telegram):
    """The updates read are confirmed (their offset saved with the acks, and the answers in the
    outbox) before any answer is sent: a run killed while sending leaves them to the outbox.
    (A run killed before that save handles them again: tests/test_telegram_bot.py.)"""
    host.health(disk="critical")  # the alert, and an alert state to ack
    telegram.command("/mute scraper:* 2h deploy", chat_id=CHAT, user_id=USER)
    telegram.command("/ack disk:/", chat_id=CHAT, user_id=USER)
    telegram.fail(HANG)  # the first answer (the /mute reply) never comes: the run is killed waiting for it
    before = len(telegram.received)
    path = host.folder / "monitor.toml"
    proc = subprocess.Popen([MONITOR, "health", "--format", "json", "--config", str(path)], cwd=host.folder,
                            env=clean_env({"TELEGRAM_BOT_TOKEN": TOKEN}), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 60  # generous: a busy CI machine
    while len(telegram.received) == before and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    silences = json.loads((host.state / "silences.json").read_text())["silences"]
    assert [s["pattern"] for s in silences].count("scraper:*") == 1
    state = host.alert_state()
    assert state["telegram"]["offset"] == telegram.updates[-1]["update_id"] + 1  # confirmed...
    assert state["checks"]["disk:/"]["ack"]["by"] == "@anna"
    waiting = [json.loads(line)["text"] for line in (host.state / "outbox.jsonl").read_text().splitlines()]
    assert len([t for t in waiting if t.startswith("muted")]) == 1  # ...the answers wait in the outbox

    host.health(disk="critical")  # not read again: the answers go from the outbox, once
    silences = json.loads((host.state / "silences.json").read_text())["silences"]
    assert [s["pattern"] for s in silences].count("scraper:*") == 1
    answers = [html_to_plain(r.text) for r in telegram.delivered if not r.reply_markup]
    assert len([a for a in answers if a.startswith("muted scraper:*")]) == 1
    assert len([a for a in answers if "acked by @anna" in a]) == 1
    host.health(disk="critical")
    assert len([r for r in telegram.delivered if not r.reply_markup]) == 2  # nothing handled a third time
    host.assert_token_nowhere()


def test_a_webhook_conflict_is_mailed_once_with_the_fix_and_alerts_still_go(host, telegram):
    telegram.webhook = True
    first = host.health(disk="critical")
    second = host.health(disk="critical")
    assert "deleteWebhook" in first.stderr and "409" in first.stderr
    assert "deleteWebhook" not in second.stderr
    assert [r["event"] for r in first.log if r.get("event") == "telegram_webhook_conflict"] == \
        ["telegram_webhook_conflict"]
    assert "CRITICAL" in telegram.delivered[0].text and first.code == 2
    host.assert_token_nowhere()


def test_telegram_poll_answers_without_running_checks_and_setup_lists_ids(host, telegram):
    host.health(disk="critical")
    path = host.folder / "monitor.toml"
    env = clean_env({"TELEGRAM_BOT_TOKEN": TOKEN})
    telegram.command("/help", chat_id=CHAT, user_id=999, username="newcomer")
    setup = subprocess.run([MONITOR, "telegram", "setup", "--config", str(path)], cwd=host.folder, env=env,
                           capture_output=True, text=True, timeout=60)
    assert setup.returncode == 0, setup.stderr
    assert f"chat {CHAT}" in setup.stdout and "user 999" in setup.stdout and "@newcomer" in setup.stdout
    assert [c["command"] for c in telegram.commands] == ["status", "ack", "mute", "unmute", "silences",
                                                        "report", "help"]
    telegram.command("/status", chat_id=CHAT, user_id=USER)
    poll = subprocess.run([MONITOR, "telegram", "poll", "--config", str(path)], cwd=host.folder, env=env,
                          capture_output=True, text=True, timeout=60)
    assert poll.returncode == 0 and poll.stdout == "" and poll.stderr == ""
    help_text, status = [html_to_plain(r.text) for r in telegram.delivered[1:]]
    assert "/ack CHECK" in help_text and "disk:/ critical since" in status
    assert host.alert_state()["checks"]["disk:/"]["status"] == "critical"  # the poll kept every command's state
    assert SECRET not in setup.stdout + setup.stderr + poll.stderr
