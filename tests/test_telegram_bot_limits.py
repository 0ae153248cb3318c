"""The bot's limits (issue 16). The notify lock is never outlasted: a run's Telegram step has one
budget, a Telegram that does not answer costs one timeout, `monitor telegram poll` gives way to a
job, and a daily report that waited out the lock anyway is kept for the next run, never lost.
`telegram setup` knows a chat configured by its @name.

Against the loopback Bot API stand-in, real state files and real locks (OFD locks conflict
between two descriptions of one process too, so a test can hold the lock itself).
"""

import json
import threading
import time

import pytest

from monitor import state
from monitor.alerts import notify as notify_module
from monitor.alerts.telegram import html_to_plain
from monitor.cli import main
from monitor.results import CRITICAL, OK
from tests.telegram_standin import HANG, migrated
from tests.test_telegram_bot import CHAT, T0, TOKEN, Install, replies, telegram  # noqa: F401 - fixture

REPORT = ("<b>Daily report</b> 42 opportunities", True)


@pytest.fixture
def install(tmp_path, telegram):
    return Install(tmp_path, telegram)


def texts(telegram, chat=None) -> list[str]:
    return [html_to_plain(r.text) for r in telegram.delivered if chat is None or r.chat_id == chat]


def test_a_report_behind_a_run_that_telegram_leaves_hanging_is_queued_then_sent(install, telegram):
    """Telegram accepts connections and never answers; telegram.timeout 1 s, 3 chats. A health run
    holds the notify lock while a daily report waits for it: the report gets the lock, is queued,
    and goes out once Telegram answers again."""
    install.timeout = 1.0
    install.other_chats = ["-100456", "-100789"]
    install.run(("disk:/", OK))
    telegram.method("getUpdates", HANG, HANG)
    telegram.always(HANG)
    health = {}

    def health_run():
        started = time.monotonic()
        health["summary"] = install.run(("disk:/", CRITICAL), now=T0 + 600)
        health["took"] = time.monotonic() - started

    holder = threading.Thread(target=health_run)
    holder.start()
    deadline = time.monotonic() + 30
    while not telegram.calls_of("getUpdates")[1:] and time.monotonic() < deadline:
        time.sleep(0.01)  # the health run holds the lock and waits on Telegram
    report = install.run(command="daily-report", message=REPORT, now=T0 + 660)
    holder.join(60)
    assert health["took"] <= 10  # generous: one timeout to read, one to send, not (1 + 3 chats) x 1 s
    assert health["summary"]["queued"] == 3 and report["queued"] == 3
    outbox = [json.loads(line) for line in (install.state / "outbox.jsonl").read_text().splitlines()]
    assert sorted(m["chat_id"] for m in outbox if "Daily report" in m["text"]) == [CHAT, "-100456", "-100789"]
    assert len(telegram.calls_of("getUpdates")) == 2  # the report's run did not read: Telegram was not answering

    telegram.always(None)
    install.run(("disk:/", CRITICAL), now=T0 + 900)
    for chat in (CHAT, "-100456", "-100789"):
        assert "Daily report 42 opportunities" in texts(telegram, chat)
    assert not (install.state / "outbox.jsonl").read_text().strip()


def test_a_report_that_waited_out_the_notify_lock_goes_out_with_the_next_run(install, telegram, monkeypatch):
    from monitor import jobs

    install.now = time.time()  # jobs._notify runs at the real time
    install.run(("disk:/", OK))
    holder = state.RunLock(str(install.state), "notify", 0)
    holder.acquire()  # a run stuck on something else than Telegram
    monkeypatch.setattr(notify_module, "lock_wait", lambda config: 0.05)
    problems = {}
    try:
        summary = jobs._notify("daily-report", jobs.Options(), install.config(), [], problems, REPORT)
    finally:
        holder.release()
    assert summary["sent"] == 0 and "notifications skipped" in problems["state_write_error"]
    (kept,) = install.state.glob("pending-*.json")
    assert f"its message waits in {kept} for the next run" in problems["state_write_error"]
    assert texts(telegram) == []

    install.run(("disk:/", OK))
    assert texts(telegram) == ["Daily report 42 opportunities"]
    assert list(install.state.glob("pending-*.json")) == []
    install.run(("disk:/", OK))
    assert len(telegram.delivered) == 1  # once


def test_a_pending_report_sent_by_a_run_that_failed_to_save_afterwards_is_not_sent_again(
        install, telegram, monkeypatch):
    """The pending files went only after the run's last save: a run that rewrote the outbox after
    sending but could not write its alert state (a full disk, or killed in between) left them
    behind, and the next run queued the report again. They go once an outbox holds it."""
    install.run(("disk:/", OK))
    assert notify_module._keep_pending(install.config(), "daily-report", "web1", install.now, REPORT)
    write_json = state.write_json

    def disk_full_once_sent(path, data, *args, **kwargs):
        if telegram.delivered and str(path).endswith(notify_module.ALERTS_FILE):
            raise OSError(28, "No space left on device")
        return write_json(path, data, *args, **kwargs)

    monkeypatch.setattr(state, "write_json", disk_full_once_sent)
    summary = install.run(("disk:/", CRITICAL))  # a new alert: the state changes
    assert summary["sent"] == 2 and list(install.state.glob("pending-*.json")) == []
    monkeypatch.setattr(state, "write_json", write_json)
    install.run(("disk:/", CRITICAL))
    assert texts(telegram).count("Daily report 42 opportunities") == 1


def test_the_lock_wait_outlasts_what_a_run_may_spend(install):
    config = install.config()
    assert notify_module.telegram_budget(config) == 20 and notify_module.lock_wait(config) == 30
    install.timeout = 60.0
    config = install.config()
    config["alertmanager"] = {"timeout": 5.0}
    assert notify_module.lock_wait(config) == 60 + 5 + 10


def test_telegram_poll_gives_way_quietly_to_a_job_holding_the_notify_lock(install, telegram, capsys, monkeypatch):
    path = install.folder / "monitor.toml"
    path.write_text(install.toml())
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", TOKEN)
    install.run(("disk:/", OK))
    telegram.command("/help")
    holder = state.RunLock(str(install.state), "notify", 0)
    holder.acquire()
    started = time.monotonic()
    try:
        code = main(["telegram", "poll", "--config", str(path)])
    finally:
        holder.release()
    assert code == 0 and time.monotonic() - started < 10  # a moment, not the 30 s a job waits
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""  # cron mails nothing
    assert replies(telegram) == []
    assert main(["telegram", "poll", "--config", str(path)]) == 0
    assert len(replies(telegram)) == 1 and "/ack CHECK" in replies(telegram)[0]


def test_commands_are_not_read_for_a_while_after_telegram_did_not_answer(install, telegram):
    install.run(("disk:/", OK))
    telegram.stop()  # connection refused: reads and sends get no answer
    install.run(("disk:/", CRITICAL))
    telegram.start()
    telegram.command("/help")
    install.run(("disk:/", CRITICAL), minutes=1)  # the outbox goes first; no getUpdates
    assert len(telegram.calls_of("getUpdates")) == 1
    assert "CRITICAL" in telegram.delivered[0].text
    install.run(("disk:/", CRITICAL), minutes=1)  # Telegram answered the send: read again
    assert len(telegram.calls_of("getUpdates")) == 2 and len(replies(telegram)) == 1


def test_the_runs_time_for_telegram_ends_sending_and_the_rest_waits(install, telegram, monkeypatch):
    """Reading used the run's whole time for Telegram: the messages are left untried, as they were."""
    monkeypatch.setattr(notify_module, "TELEGRAM_BUDGET", 0.0)  # no more than the 1 s telegram.timeout
    install.timeout = 1.0
    install.other_chats = ["-100456", "-100789"]
    telegram.method("getUpdates", HANG)
    summary = install.run(("disk:/", CRITICAL))
    assert summary["sent"] == summary["failed"] == 0 and summary["outbox"] == 3
    outbox = [json.loads(line) for line in (install.state / "outbox.jsonl").read_text().splitlines()]
    assert [m["attempts"] for m in outbox] == [0, 0, 0]  # untried, not failed
    assert telegram.received == []
    install.run(("disk:/", CRITICAL))
    assert sorted(r.chat_id for r in telegram.delivered) == sorted([CHAT, "-100456", "-100789"])


def test_a_send_cut_short_by_the_runs_own_time_is_not_telegram_unreachable(install, telegram, monkeypatch):
    """Telegram answered, but the run's time for it ran out during a send: said "Telegram
    unreachable", it kept the next runs from reading commands for 5 minutes."""
    from monitor.alerts.telegram import OUT_OF_TIME

    install.other_chats = ["-100456"]
    install.run(("disk:/", OK))
    monkeypatch.setattr(notify_module, "telegram_budget", lambda config: 1.0)  # telegram.timeout is 5 s
    telegram.refuse_chat("-100456", HANG)  # this chat's send outlasts the run's time
    summary = install.run(("disk:/", CRITICAL))
    assert summary["sent"] == 1 and summary["outbox"] == 1
    (kept,) = [json.loads(line) for line in (install.state / "outbox.jsonl").read_text().splitlines()]
    assert (kept["chat_id"], kept["last_error"]) == ("-100456", OUT_OF_TIME)
    assert "unreachable" not in install.alerts().get("telegram", {})
    telegram.refuse_chat("-100456", None)
    telegram.command("/mute disk:* 1h")
    install.run(("disk:/", CRITICAL), minutes=1)  # reads at once: the /mute counts
    assert len(telegram.calls_of("getUpdates")) == 3 and [s["pattern"] for s in install.silences()] == ["disk:*"]
    assert "CRITICAL" in texts(telegram, "-100456")[0]


def test_a_chat_migration_learnt_by_a_run_that_saved_before_sending_is_remembered(install, telegram):
    """A command read makes the run save its state before sending; the migration Telegram then
    answered went into that saved copy, so the final save saw nothing new and wrote nothing."""
    install.run(("disk:/", OK))
    telegram.command("/help")
    telegram.refuse_chat(CHAT, migrated(-1009876543210))
    install.run(("disk:/", OK), command="daily-report", message=REPORT)  # the report, then the /help answer
    assert [(r.chat_id, r.status) for r in telegram.received] == [(CHAT, 400), ("-1009876543210", 200),
                                                                   ("-1009876543210", 200)]
    assert install.alerts()["chat_migrations"] == {CHAT: "-1009876543210"}


def test_telegram_setup_counts_a_chat_named_by_its_username_as_configured(install, telegram, capsys, monkeypatch):
    install.extra_chat = "@OpsRoom"
    path = install.folder / "monitor.toml"
    path.write_text(install.toml())
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", TOKEN)
    telegram.post({"message": {"message_id": 1, "date": 1, "text": "/help", "from": {"id": 111, "username": "anna"},
                               "chat": {"id": -100777, "type": "supergroup", "username": "opsroom"}}})
    telegram.command("/help", chat_id="-100999")
    assert main(["telegram", "setup", "--config", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    (named,) = [line for line in lines if line.startswith("chat -100777")]
    (other,) = [line for line in lines if line.startswith("chat -100999")]
    assert named.endswith(" in telegram.chat_ids") and other.endswith("not in telegram.chat_ids")
