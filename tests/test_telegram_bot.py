"""Answering back from the phone (issue 16): each run reads what the operators said since the
last one, answers /status, /ack, /mute..., and handles the buttons under its alerts.

The notification step runs in-process, as cron's runs would call it, against the
loopback Bot API stand-in (real HTTP, real getUpdates offsets), with real state files
in a temporary folder and the clock passed in.
"""

import json
import logging
import os
import time
import tomllib

import pytest

from monitor import config as config_mod
from monitor import state as state_files
from monitor.alerts import bot, bot_text
from monitor.alerts.notify import notify
from monitor.alerts.telegram import TelegramClient, html_to_plain
from monitor.results import CRITICAL, OK, WARNING, Result
from tests.telegram_standin import TelegramStandIn, _error, polled_elsewhere, server_error, too_many_requests

TOKEN = "123456789:AAFAKEtokenFAKEtokenFAKEtokenFAKE12"
CHAT = "-100123"
T0 = 1_800_000_000.0
ANNA, BOB, EVE = 111, 222, 666  # anna and bob may speak; eve is a stranger


@pytest.fixture
def telegram():
    with TelegramStandIn() as standin:
        yield standin


class Install:
    """A state folder and a config; `run(...)` is one cron run's notification step."""

    def __init__(self, folder, telegram, allowed=(ANNA, BOB)):
        self.folder, self.telegram = folder, telegram
        self.allowed = list(allowed)
        self.extra_chat = None  # another entry of chat_ids
        self.other_chats = []   # and more
        self.timeout = 5.0      # telegram.timeout, seconds
        self.now = T0

    def toml(self) -> str:
        users = ", ".join(f'"{u}"' for u in self.allowed)
        chats = ", ".join(f'"{c}"' for c in (CHAT, self.extra_chat, *self.other_chats) if c)
        return (f'[paths]\nstate = "{self.folder}/state"\nlogs = "{self.folder}/logs"\n'
                f'[telegram]\nchat_ids = [{chats}]\napi_url = "{self.telegram.api_url}"\n'
                f'timeout = "{self.timeout:g}s"\nallowed_users = [{users}]\n')

    def config(self) -> dict:
        return config_mod.build(tomllib.loads(self.toml()), None, str(self.folder))

    def run(self, *statuses, command="health", message=None, minutes=5, now=None, **options) -> dict:
        """One run whose checks have `statuses` (("disk:/", CRITICAL), ...), `minutes` after the last
        (or at `now`); `options` go to notify()."""
        if now is None:
            self.now += minutes * 60
            now = self.now
        results = [Result(status, f"{check} is {status}", id=check, kind="system") for check, status in statuses]
        client = TelegramClient(TOKEN, self.telegram.api_url, self.timeout, sleep=lambda s: None)
        config = self.config()
        os.makedirs(config["paths"]["state"], exist_ok=True)
        return notify(config, command, results, None, "web1", now=now, client=client, message=message,
                      **options)

    @property
    def state(self):
        return self.folder / "state"

    def alerts(self) -> dict:
        return json.loads((self.state / "alerts.json").read_text())

    def silences(self) -> list:
        path = self.state / "silences.json"
        return json.loads(path.read_text())["silences"] if path.exists() else []


@pytest.fixture
def install(tmp_path, telegram):
    return Install(tmp_path, telegram)


def replies(telegram, since=0) -> list[str]:
    """The texts the chat received that are not alerts, as a person reads them."""
    return [html_to_plain(r.text) for r in telegram.delivered[since:] if not r.reply_markup]


# --- reading updates ---------------------------------------------------------------------------

def test_each_run_reads_updates_from_the_offset_after_the_last_one_it_handled(install, telegram):
    install.run(("disk:/", OK))
    first = telegram.calls_of("getUpdates")[0]
    assert first["timeout"] == 0 and first["allowed_updates"] == ["message", "callback_query"]
    assert "offset" not in first  # nothing handled yet
    sent = telegram.command("/help")
    install.run(("disk:/", OK))
    install.run(("disk:/", OK))
    assert telegram.calls_of("getUpdates")[2]["offset"] == sent["update_id"] + 1
    assert len(replies(telegram)) == 1  # answered once, in the run that read it
    assert "/status" in replies(telegram)[0] and "/mute" in replies(telegram)[0]


def test_a_flood_of_10000_updates_is_handled_100_per_run_with_a_bounded_reply_count(install, telegram, caplog):
    for _ in range(10_000):
        telegram.command("/silences")
    with caplog.at_level(logging.WARNING, "monitor"):
        install.run(("disk:/", OK))
    assert install.alerts()["telegram"]["offset"] == 1000 + 100  # the first 100 handled
    assert len(telegram.delivered) == bot.MAX_REPLIES
    full = [r for r in caplog.records if getattr(r, "event", "") == "telegram_updates_full"]
    assert len(full) == 1 and full[0].getMessage().startswith("telegram: 100 updates handled, more waiting")
    install.run(("disk:/", OK))
    assert install.alerts()["telegram"]["offset"] == 1000 + 200


def test_malformed_updates_are_skipped_with_a_warning_and_the_rest_handled(install, telegram, caplog):
    telegram.post({"message": "not an object"})
    telegram.post({"callback_query": {"id": 5}})
    telegram.post({"message": {"chat": {"id": "abc"}, "text": "/status"}})
    telegram.command("/help")
    with caplog.at_level(logging.WARNING, "monitor"):
        install.run(("disk:/", OK))
    assert "3 update(s) could not be read" in caplog.text
    assert len(replies(telegram)) == 1
    assert install.alerts()["telegram"]["offset"] == 1004


def test_a_webhook_is_a_configuration_error_said_once_with_the_fix(install, telegram, capsys, caplog):
    telegram.webhook = True
    with caplog.at_level(logging.ERROR, "monitor"):
        install.run(("disk:/", OK))
        install.run(("disk:/", OK))
    err = capsys.readouterr().err
    assert err.count("deleteWebhook") == 1 and "409" in err
    assert caplog.text.count("deleteWebhook") == 1
    assert TOKEN.split(":")[1] not in err + caplog.text
    telegram.webhook = False
    telegram.command("/help")
    install.run(("disk:/", OK))
    assert len(replies(telegram)) == 1  # fixed: read again, and said again should it come back
    assert "webhook" not in install.alerts()["telegram"]


def test_another_program_reading_the_same_bot_is_said_as_such_once_a_day(install, telegram, capsys, caplog):
    """409 is also Telegram's answer while another host polls with the same token: no webhook to delete."""
    echoing = _error(409, f"Conflict: terminated by other getUpdates request of /bot{TOKEN}/getUpdates")
    telegram.method("getUpdates", polled_elsewhere(), polled_elsewhere(), echoing)
    with caplog.at_level(logging.INFO, "monitor"):
        install.run(("disk:/", OK))
        install.run(("disk:/", OK))
        install.run(("disk:/", OK), minutes=24 * 60)
    err = capsys.readouterr().err
    assert err.count("another program reads this bot's updates (Conflict: terminated by other getUpdates") == 2
    assert "give each host its own bot" in err and "webhook" not in err + caplog.text
    assert [r.levelname for r in caplog.records if getattr(r, "event", "") == "telegram_updates_conflict"] == \
        ["ERROR", "INFO", "ERROR"]
    assert TOKEN.split(":")[1] not in err + caplog.text


def test_a_telegram_that_is_down_costs_a_warning_and_never_the_alert(install, telegram):
    telegram.method("getUpdates", server_error())
    install.run(("disk:/", CRITICAL))
    assert [r for r in telegram.delivered if "disk:/" in r.text]


# --- who may speak -------------------------------------------------------------------------------

def test_a_stranger_in_an_allowed_group_is_ignored_and_logged_once(install, telegram, caplog):
    install.run(("disk:/", CRITICAL))
    telegram.command("/ack disk:/", user_id=EVE, username="eve")
    telegram.command("/mute * 1d", user_id=EVE, username="eve")
    with caplog.at_level(logging.WARNING, "monitor"):
        install.run(("disk:/", CRITICAL))
    assert replies(telegram, 1) == []
    assert "ack" not in install.alerts()["checks"]["disk:/"] and install.silences() == []
    strangers = [r for r in caplog.records if getattr(r, "event", "") == "telegram_stranger"]
    assert len(strangers) == 1 and "666" in strangers[0].getMessage()


def test_a_stranger_chat_is_never_answered(install, telegram):
    telegram.command("/status", chat_id="-100999", user_id=ANNA)
    telegram.command("/help", chat_id=str(EVE), user_id=EVE, chat_type="private")
    install.run(("disk:/", OK))
    assert telegram.received == [] and install.alerts()["telegram"]["offset"] == 1002


def _in_channel(update: dict) -> dict:
    chat = (update.get("callback_query") or update)["message"]["chat"]
    chat["type"] = "channel"
    return update


def test_in_a_channel_only_the_allowed_users_may_press_and_nobody_when_none_is_named(install, telegram):
    """A channel's readers are anyone who found it: its button presses obey allowed_users too."""
    install.run(("disk:/", CRITICAL))
    (alert,) = telegram.delivered
    _in_channel(telegram.press("24h disk:/", alert, user_id=EVE, username="eve"))
    _in_channel(telegram.press("ack disk:/", alert, user_id=ANNA, username="anna"))
    install.run(("disk:/", CRITICAL))
    assert [a["text"] for a in telegram.calls_of("answerCallbackQuery")] == ["not allowed", "acked by @anna"]
    assert install.silences() == []

    install.allowed = []  # nobody named: in groups everyone, in a channel nobody
    _in_channel(telegram.press("24h disk:/", alert, user_id=ANNA, username="anna"))
    _in_channel(telegram.command("/mute * 1d", user_id=ANNA, username="anna"))
    telegram.command("/help", user_id=EVE, username="eve")  # the group: anyone
    install.run(("disk:/", CRITICAL))
    assert telegram.calls_of("answerCallbackQuery")[-1]["text"] == "not allowed"
    assert install.silences() == [] and len(replies(telegram)) == 1 and "/ack CHECK" in replies(telegram)[0]


def test_anyone_in_the_group_may_speak_when_allowed_users_is_empty(install, telegram):
    install.allowed = []
    telegram.command("/help", user_id=EVE, username="eve")
    install.run(("disk:/", OK))
    assert len(replies(telegram)) == 1


def test_a_command_addressed_to_the_bot_by_name_works(install, telegram):
    telegram.command("/help@monitor_test_bot")
    telegram.command("/frobnicate")  # unknown: the list
    telegram.command("just talking in the group")
    install.run(("disk:/", OK))
    assert len(replies(telegram)) == 2 and all("/ack CHECK" in r for r in replies(telegram))


def test_a_command_addressed_to_another_bot_is_left_to_it(install, telegram):
    telegram.command("/status@other_bot")  # a group with several bots, privacy mode off
    telegram.command("/help@Monitor_Test_Bot")
    install.run(("disk:/", OK))
    assert len(replies(telegram)) == 1 and "/ack CHECK" in replies(telegram)[0]
    assert [name for name, _ in telegram.calls].count("getMe") == 1
    assert install.alerts()["telegram"]["me"] == "monitor_test_bot"
    telegram.command("/status@other_bot")
    install.run(("disk:/", OK))  # the name is kept: asked again at most hourly (a rename)
    assert [name for name, _ in telegram.calls].count("getMe") == 1 and len(replies(telegram)) == 1
    telegram.command("/status@other_bot")
    install.run(("disk:/", OK), minutes=61)
    assert [name for name, _ in telegram.calls].count("getMe") == 2 and len(replies(telegram)) == 1


def test_command_parsing():
    assert bot.parse_command("/status") == ("status", "")
    assert bot.parse_command("/Mute@MyBot disk:* 2h full disk") == ("mute", "disk:* 2h full disk")
    assert bot.parse_command("status") is None and bot.parse_command("/") is None
    assert bot.addressee("/Mute@MyBot disk:* 2h") == "mybot" and bot.addressee("/status") is None


# --- the commands ----------------------------------------------------------------------------------

def test_status_of_400_problems_fits_two_messages_and_counts_the_rest(install, telegram):
    checks = [(f"scraper:service-number-{n:04d}", CRITICAL) for n in range(400)]
    install.run(*checks)
    before = len(telegram.received)
    telegram.command("/status")
    install.run(*checks)
    chunks = [r for r in telegram.received[before:] if not r.reply_markup]
    assert 1 <= len(chunks) <= 2 and all(r.status == 200 for r in chunks)
    text = "\n".join(html_to_plain(r.text) for r in chunks)
    shown = text.count(" critical since ")
    assert 0 < shown <= 40 and f"… and {400 - shown} more (monitor health)" in text
    assert "last runs: health" in text


def test_status_lists_problems_worst_first_ok_ones_as_a_count_and_when_commands_ran(install, telegram):
    (install.state).mkdir()
    (install.state / "backup-check.lock").write_text("")
    os.utime(install.state / "backup-check.lock", (T0, T0))
    install.run(("disk:/", WARNING), ("vault", CRITICAL), ("cpu", OK), ("memory", OK))
    telegram.command("/status")
    install.run(("disk:/", WARNING), ("vault", CRITICAL), ("cpu", OK), ("memory", OK))
    (status,) = replies(telegram)
    lines = status.splitlines()
    assert "web1" in lines[0]
    assert lines[1].startswith("🚨 vault critical since") and "vault is critical" in lines[2]
    assert lines[3].startswith("⚠️ disk:/ warning since")
    assert "2 checks ok" in status
    assert "health " + bot_text.when(install.now) in status and "backup-check " + bot_text.when(T0) in status
    assert "daily-report never" in status


def test_ack_stops_reminders_until_resolved_and_the_resolved_still_comes(install, telegram):
    install.run(("disk:/", CRITICAL))
    telegram.command("/ack disk:/", username="anna")
    install.run(("disk:/", CRITICAL))
    assert "acked by @anna" in replies(telegram)[0]
    assert install.alerts()["checks"]["disk:/"]["ack"]["by"] == "@anna"
    for _ in range(30):  # two and a half hours: two reminders were due
        install.run(("disk:/", CRITICAL))
    assert [r for r in telegram.delivered if "(reminder)" in r.text] == []
    telegram.command("/status")
    install.run(("disk:/", CRITICAL))
    assert "acked by @anna at" in replies(telegram)[-1]
    install.run(("disk:/", OK))
    assert "RESOLVED" in telegram.delivered[-1].text
    assert "ack" not in install.alerts()["checks"]["disk:/"]


def test_an_acked_alert_that_changes_severity_is_told_and_reminded_again(install, telegram):
    install.run(("disk:/", WARNING))
    telegram.command("/ack disk:/")
    install.run(("disk:/", WARNING))
    sent = len(telegram.delivered)
    install.run(("disk:/", CRITICAL))
    assert "CRITICAL" in telegram.delivered[sent].text
    for _ in range(13):
        install.run(("disk:/", CRITICAL))
    assert any("(reminder)" in r.text for r in telegram.delivered[sent + 1:])


def test_ack_of_an_ok_or_unknown_check_says_why_not(install, telegram):
    install.run(("disk:/", OK))
    telegram.command("/ack disk:/")
    telegram.command("/ack nosuch")
    telegram.command("/ack")
    install.run(("disk:/", OK))
    assert replies(telegram) == ["disk:/: it is ok: nothing to acknowledge", "nosuch: no such check",
                                 "usage: /ack CHECK"]


def test_mute_unmute_and_silences_share_monitor_silence_with_the_user_as_author(install, telegram):
    install.run(("disk:/", CRITICAL))
    telegram.command("/mute disk:* 2h <b>full</b> disk", username="anna")
    install.run(("disk:/", CRITICAL))
    (silence,) = install.silences()
    assert silence["pattern"] == "disk:*" and silence["author"] == "@anna" and silence["reason"] == "<b>full</b> disk"
    assert silence["until"] == install.now + 7200
    telegram.command("/silences")
    install.run(("disk:/", OK))
    assert "<b>full</b> disk" in replies(telegram)[-1] and "by @anna" in replies(telegram)[-1]
    telegram.command(f"/unmute {silence['id']}")
    telegram.command("/mute disk:* soon")
    install.run(("disk:/", OK))
    assert replies(telegram)[-2] == f"removed silence {silence['id']}"
    assert "expected a duration" in replies(telegram)[-1]
    assert install.silences() == []


def test_a_mute_longer_than_a_year_is_refused_and_absurd_saved_times_still_read(install, telegram):
    telegram.command("/mute disk:* 99999999999999d")
    telegram.command("/mute disk:* 366d")
    install.run(("disk:/", CRITICAL))
    assert replies(telegram) == ["the duration must be at most 365d"] * 2 and install.silences() == []
    (install.state / "silences.json").write_text(json.dumps({"silences": [  # a hand edit
        {"id": "x1", "pattern": "disk:*", "until": 1e300, "reason": "", "created": 0},
        {"id": "x2", "pattern": "cpu", "until": 8.64e18, "reason": "", "created": 0}]}))
    saved = install.alerts()
    saved["checks"]["vault"] = {"status": "critical", "since": -1e300, "message": "sealed"}
    (install.state / "alerts.json").write_text(json.dumps(saved))
    telegram.command("/silences")
    telegram.command("/status")
    install.run(("disk:/", CRITICAL))
    silences, status = replies(telegram)[2:]
    assert "x1 disk:* until far future" in silences and "x2 cpu until far future" in silences
    assert "vault critical since far past (ages)" in status


def test_a_mute_counts_for_the_alerts_of_the_run_that_reads_it(install, telegram):
    telegram.command("/mute vault 1h maintenance")
    summary = install.run(("vault", CRITICAL))
    assert summary["silenced"] == 1 and not [r for r in telegram.delivered if r.reply_markup]


def test_report_repeats_the_last_daily_report(install, telegram):
    telegram.command("/report")
    install.run(("disk:/", OK))
    assert replies(telegram) == ["no daily report was sent yet"]
    install.run(command="daily-report", message=("<b>Daily report</b> 42 opportunities", True))
    telegram.command("/report")
    install.run(("disk:/", OK))
    assert replies(telegram)[-1] == "Daily report 42 opportunities"


# --- buttons under alerts --------------------------------------------------------------------------------

def test_critical_and_warning_messages_carry_ack_and_mute_buttons_naming_the_alert(install, telegram):
    install.run(("disk:/", CRITICAL), ("x" * 100, WARNING))
    (alert,) = telegram.delivered
    rows = alert.reply_markup["inline_keyboard"]
    assert [[b["text"].split()[0] for b in row] for row in rows] == [["Ack", "Mute", "Mute"]] * 2
    data = [b["callback_data"] for row in rows for b in row]
    assert all(len(d.encode()) <= 64 for d in data) and "ack disk:/" in data
    install.run(("disk:/", OK), ("x" * 100, OK))
    assert telegram.delivered[-1].reply_markup is None  # RESOLVED: nothing to press


def test_pressing_ack_answers_who_did_it_and_edits_the_keyboard(install, telegram):
    install.run(("disk:/", CRITICAL), ("y" * 100, CRITICAL))
    (alert,) = telegram.delivered
    long_ref = alert.reply_markup["inline_keyboard"][1][0]["callback_data"]
    telegram.press("ack disk:/", alert, username="anna")
    telegram.press(long_ref, alert, user_id=BOB, username="bob")
    install.run(("disk:/", CRITICAL), ("y" * 100, CRITICAL))
    assert [a["text"] for a in telegram.calls_of("answerCallbackQuery")] == ["acked by @anna", "acked by @bob"]
    edits = telegram.calls_of("editMessageReplyMarkup")
    assert "acked by @anna" in edits[0]["reply_markup"]["inline_keyboard"][0][0]["text"]
    assert edits[0]["reply_markup"]["inline_keyboard"][1] == alert.reply_markup["inline_keyboard"][1]
    checks = install.alerts()["checks"]
    assert checks["disk:/"]["ack"]["by"] == "@anna" and checks["y" * 100]["ack"]["by"] == "@bob"


def test_pressing_mute_silences_that_check_alone(install, telegram):
    install.run(("disk:/[a]", CRITICAL))
    (alert,) = telegram.delivered
    telegram.press("24h disk:/[a]", alert)
    install.run(("disk:/[a]", CRITICAL))
    (silence,) = install.silences()
    assert silence["until"] == install.now + 86400 and silence["author"] == "@anna"
    from monitor.alerts.silences import matching

    assert matching([silence], "disk:/[a]") and not matching([silence], "disk:/a")
    assert telegram.calls_of("answerCallbackQuery")[0]["text"] == "muted 24h by @anna"


def test_a_strangers_press_is_not_allowed_and_changes_nothing(install, telegram):
    install.run(("disk:/", CRITICAL))
    (alert,) = telegram.delivered
    telegram.press("ack disk:/", alert, user_id=EVE, username="eve")
    telegram.press("24h disk:/", alert, user_id=EVE, username="eve")
    install.run(("disk:/", CRITICAL))
    assert [a["text"] for a in telegram.calls_of("answerCallbackQuery")] == ["not allowed", "not allowed"]
    assert telegram.calls_of("editMessageReplyMarkup") == []
    assert "ack" not in install.alerts()["checks"]["disk:/"] and install.silences() == []


# --- faults ---------------------------------------------------------------------------------------------

def test_replies_wait_behind_alerts_and_go_through_the_outbox(install, telegram):
    telegram.command("/help")
    telegram.fail(too_many_requests(60))
    install.run(("disk:/", CRITICAL))
    outbox = [json.loads(line) for line in (install.state / "outbox.jsonl").read_text().splitlines()]
    assert [bool(m["alerts"]) for m in outbox] == [True, False]  # the alert first, then the reply
    install.run(("disk:/", CRITICAL), minutes=2)
    assert "CRITICAL" in telegram.delivered[0].text and "/status" in telegram.delivered[1].text
    install.run(("disk:/", CRITICAL))
    assert len(telegram.delivered) == 2  # handled once: the next run read from the saved offset


class _Killed(BaseException):
    """The run dies here, as under kill -9: nothing after it runs."""


@pytest.mark.parametrize("dies_at", ["outbox.jsonl", "alerts.json"])
def test_handling_again_after_a_crash_adds_no_second_silence_nor_reply(install, telegram, monkeypatch, dies_at):
    """A run killed after handling but before saving the offset: the next run reads the same
    updates again (they were not confirmed) and must not double their effects."""
    install.run(("disk:/", CRITICAL))
    telegram.command("/mute disk:* 2h")
    telegram.command("/ack disk:/")
    write = state_files.atomic_write

    def dies(path, data, *args):  # the run's first write of the outbox or of the offset
        if path.endswith(dies_at):
            raise _Killed()
        return write(path, data, *args)

    monkeypatch.setattr(state_files, "atomic_write", dies)  # write_json's too
    with pytest.raises(_Killed):
        install.run(("disk:/", CRITICAL))
    monkeypatch.undo()
    assert len(install.silences()) == 1 and replies(telegram) == []  # done, confirmed to nobody
    assert "offset" not in install.alerts().get("telegram", {})

    install.run(("disk:/", CRITICAL))  # the same updates again
    assert len(install.silences()) == 1
    said = replies(telegram)
    assert len(said) == 2 and said[0].startswith("muted disk:* until") and "acked by @anna" in said[1]
    install.run(("disk:/", CRITICAL))
    assert replies(telegram) == said


def test_the_crontab_example_offers_the_every_minute_poll_commented_out():
    from pathlib import Path

    from monitor.commands.cron import poll_line

    example = (Path(__file__).parent.parent / "crontab.example").read_text()
    assert poll_line("/opt/monitor/.venv/bin/monitor", " --config /opt/monitor/monitor.toml") in example
    assert all(line.startswith("#") for line in example.splitlines() if "telegram poll" in line)


def test_a_press_is_answered_once_its_effect_is_saved_and_a_failed_answer_keeps_the_buttons(install, telegram):
    install.run(("disk:/", CRITICAL))
    (alert,) = telegram.delivered
    telegram.press("ack disk:/", alert)
    seen = []
    telegram.observe("answerCallbackQuery", lambda payload: seen.append(install.alerts()["checks"]["disk:/"]))
    telegram.method("answerCallbackQuery", _error(400, "Bad Request: query is too old and response timeout "
                                                       "expired or query ID is invalid"))
    install.run(("disk:/", CRITICAL))
    assert seen[0]["ack"]["by"] == "@anna"  # "acked by @anna" is said once the ack holds
    assert telegram.calls_of("editMessageReplyMarkup") == []  # nobody was told: the buttons stay


def test_twenty_slow_presses_are_answered_within_one_timeout(install, telegram):
    """Each answerCallbackQuery takes 0.4 s: 20 of them would hold the notify lock 8 s."""
    install.timeout = 1.0
    install.run(("disk:/", CRITICAL))
    (alert,) = telegram.delivered
    for _ in range(20):
        telegram.press("ack disk:/", alert, user_id=EVE, username="eve")
    telegram.slow("answerCallbackQuery", 0.4)
    started = time.monotonic()
    install.run(("disk:/", CRITICAL))
    assert time.monotonic() - started <= 5  # generous for a busy machine: one telegram.timeout, 1 s
    assert 1 <= len(telegram.calls_of("answerCallbackQuery")) < 20


def test_acking_a_check_that_is_ok_again_leaves_the_buttons_as_they_are(install, telegram):
    install.run(("disk:/", CRITICAL))
    (alert,) = telegram.delivered
    install.run(("disk:/", OK))
    telegram.press("ack disk:/", alert)
    install.run(("disk:/", OK))
    assert telegram.calls_of("answerCallbackQuery")[0]["text"] == "disk:/: it is ok: nothing to acknowledge"
    assert telegram.calls_of("editMessageReplyMarkup") == []


def test_a_public_group_named_by_its_username_in_chat_ids_may_speak(install, telegram):
    telegram.post({"message": {"message_id": 1, "date": 1, "text": "/help", "from": {"id": ANNA, "username": "anna"},
                               "chat": {"id": -100777, "type": "supergroup", "username": "OpsRoom"}}})
    install.extra_chat = "@opsroom"
    install.run(("disk:/", OK))
    assert [r.chat_id for r in telegram.delivered] == ["-100777"]


# --- the getUpdates call itself: bounded in time and size -----------------------------------------

@pytest.mark.parametrize("hostile", ["trickling_headers", "trickling_body", "endless_body", "hang"])
def test_a_hostile_bot_api_answer_ends_the_call_within_its_timeout_never_raising(telegram, hostile):
    from tests import telegram_standin

    answer = telegram_standin.HANG if hostile == "hang" else getattr(telegram_standin, hostile)()
    telegram.method("getUpdates", answer)
    client = TelegramClient(TOKEN, telegram.api_url, 0.5)
    started = time.monotonic()
    got = client.call("getUpdates", {"timeout": 0}, max_bytes=bot.UPDATES_BYTES)
    assert not got.ok and TOKEN.split(":")[1] not in got.describe()
    assert time.monotonic() - started < 10  # generous for a busy CI machine: the timeout is 0.5 s
    if hostile == "endless_body":
        assert got.too_big  # cut at the cap, not read on


def test_a_chunked_answer_through_a_proxy_is_read():
    from monitor.alerts import bot_api

    raw = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"b\r\n{\"ok\":true,\r\nc\r\n\"result\":[]}\r\n0\r\n\r\n")
    assert bot_api._parse(raw, 1024) == bot_api.Answer(200, {"ok": True, "result": []})


def test_a_status_that_cannot_be_written_costs_its_reply_not_the_runs_alerts(install, telegram, monkeypatch):
    def broken(*args, **kwargs):
        raise OverflowError("date value out of range")  # a state file with since = 1e300

    monkeypatch.setattr(bot_text, "status_text", broken)
    telegram.command("/status")
    install.run(("disk:/", CRITICAL))
    alerts = [r for r in telegram.delivered if r.reply_markup]
    assert len(alerts) == 1 and "disk:/" in html_to_plain(alerts[0].text)
    assert replies(telegram) == ["⚠️ /status could not be written this time; the log says why."]
    assert install.alerts()["telegram"]["offset"] == 1001  # handled: not read again next run


def test_a_command_that_fails_tells_the_sender_why(install, telegram, monkeypatch, caplog):
    """A full disk: the /mute is not done, and the sender hears so instead of nothing."""
    import errno

    from monitor.alerts import silences

    def full_disk(folder, items):
        raise OSError(errno.ENOSPC, "No space left on device", f"{folder}/silences.json")

    monkeypatch.setattr(silences, "save", full_disk)
    install.run(("disk:/", CRITICAL))
    (alert,) = telegram.delivered
    telegram.command("/mute disk:* 2h")
    telegram.press("1h disk:/", alert)
    with caplog.at_level(logging.WARNING, "monitor"):
        install.run(("disk:/", CRITICAL))
    assert replies(telegram) == ["⚠️ /mute failed: No space left on device"]
    assert telegram.calls_of("answerCallbackQuery")[0]["text"] == "failed: No space left on device"
    assert str(install.folder) not in replies(telegram)[0]
    assert caplog.text.count("could not be handled") == 2
    assert install.alerts()["telegram"]["offset"] == 1002  # answered once, not tried again every run
