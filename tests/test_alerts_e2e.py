"""Alerts end to end: the installed `monitor` run again and again, as cron would, against a
loopback stand-in for the Telegram Bot API, counting what the operator's chat received.

Thresholds force the verdict (disk and inodes of "/"; or, where the exact exit code
matters, a scraper probing a loopback server, run with `--only scraper`), so every run
is real: real state files, real outbox, real HTTP. A busy test machine can push the CPU
to 100%, so each installation starts with `cpu` silenced: its alerts would otherwise
add messages the tests do not expect. Every fault test ends by grepping everything the
runs printed or wrote for the bot token (SPEC: Alerts, [telegram], [alerts], Failure
behaviour).
"""

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from monitor.alerts.bot_token import TOKEN_COPY
from monitor.alerts.telegram import html_to_plain
from tests import loopback
from tests.conftest import MONITOR, clean_env, monitor_json, seed_cpu_baseline
from tests.telegram_standin import (HANG, TelegramStandIn, endless_body, forbidden, migrated, parse_error,
                                    server_error, too_many_requests, trickling_body, unauthorized)

TOKEN = "123456789:AAFAKEtokenFAKEtokenFAKEtokenFAKE12"
SECRET = TOKEN.split(":", 1)[1]  # the part that must never show, whatever masks the bot id
CHAT = "-100123"

LEVELS = {
    "ok": "{ warning = 100, critical = 100 }",
    "warning": "{ warning = 0, critical = 100 }",
    "critical": "{ warning = 0, critical = 0 }",
}
# The scraper: 503 is critical; 200 is a warning when any latency is too much.
SCRAPER = {
    "ok": (200, "{ warning = 100000, critical = 100000 }"),
    "warning": (200, "{ warning = 0, critical = 100000 }"),
    "critical": (503, "{ warning = 100000, critical = 100000 }"),
}
CPU_SILENCE = {"id": "cpunoise", "pattern": "cpu", "reason": "the test machine may be busy", "created": 0}


@pytest.fixture
def telegram():
    """The Bot API stand-in, listening on a loopback port for the test."""
    with TelegramStandIn() as standin:
        yield standin


@pytest.fixture
def web():
    """The scraper's health endpoint, on another loopback port."""
    with loopback.serve() as server:
        yield server


class Run:
    def __init__(self, proc: subprocess.CompletedProcess, seconds: float, log: list[dict]):
        self.proc, self.seconds, self.log = proc, seconds, log  # log: this run's records
        self.code, self.stdout, self.stderr = proc.returncode, proc.stdout, proc.stderr

    @property
    def data(self) -> dict:
        lines = self.stdout.splitlines()
        assert len(lines) == 1, self.stdout + self.stderr
        return monitor_json(lines[0])

    @property
    def notifications(self) -> dict:
        return self.data["notifications"]


class Host:
    """One installation in a temporary folder: its config, its runs, its files."""

    def __init__(self, folder: Path, telegram: TelegramStandIn, web):
        self.folder, self.telegram, self.web = folder, telegram, web
        self.chat_ids = [CHAT]
        self.telegram_extra = ""
        self.alerts = ""
        self.disk_paths = ["/"]
        self.extra = ""  # more TOML after [alerts]
        self.runs: list[Run] = []
        self.write_silences([])

    def config(self, disk: str, inodes: str, scraper: str) -> str:
        chats = ", ".join(f'"{c}"' for c in self.chat_ids)
        paths = ", ".join(json.dumps(p) for p in self.disk_paths)
        status, latency = SCRAPER[scraper]
        self.web.route("/health", loopback.reply(status, "ok" if status == 200 else "down"))
        # Every other threshold is out of reach: the disk and inodes of "/" decide.
        return (f"[system]\n"
                f"cpu_percent = {LEVELS['ok']}\nmemory_percent = {LEVELS['ok']}\nswap_percent = {LEVELS['ok']}\n"
                f"load_per_cpu = {{ warning = 1000000, critical = 1000000 }}\n"
                f"disk_percent = {LEVELS[disk]}\ninodes_percent = {LEVELS[inodes]}\n"
                f"disk_paths = [{paths}]\nnetwork_interfaces = [\"lo\"]\n"
                f"[[scrapers]]\nname = \"uniswap\"\nurl = \"{self.web.url('/health')}\"\nlatency_ms = {latency}\n"
                f"success_rate = {{ warning = 0, critical = 0 }}\n"  # this run's probe decides
                f"[telegram]\nchat_ids = [{chats}]\napi_url = \"{self.telegram.api_url}\"\n{self.telegram_extra}\n"
                f"[alerts]\n{self.alerts}\n{self.extra}")

    def monitor(self, *args, disk="ok", inodes="ok", scraper="ok", token=TOKEN) -> Run:
        """Run `monitor ARGS --config monitor.toml` with the bot token in the environment."""
        path = self.folder / "monitor.toml"
        path.write_text(self.config(disk, inodes, scraper))
        env = {"TELEGRAM_BOT_TOKEN": token} if token else {}
        logged = len(self.log())
        started = time.monotonic()
        proc = subprocess.run([MONITOR, *args, "--config", str(path)], cwd=self.folder, env=clean_env(env),
                              capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        run = Run(proc, time.monotonic() - started, self.log()[logged:])
        self.runs.append(run)
        return run

    def health(self, *args, disk="ok", inodes="ok", **kwargs) -> Run:
        return self.monitor("health", "--format", "json", *args, disk=disk, inodes=inodes, **kwargs)

    def scraper(self, status: str, *args, **kwargs) -> Run:
        """A run that judges only the scraper: its exit code depends on nothing else."""
        return self.monitor("health", "--format", "json", "--only", "scraper", *args, scraper=status, **kwargs)

    def write_silences(self, silences: list[dict]) -> None:
        self.state.mkdir(exist_ok=True)
        cpu = {**CPU_SILENCE, "until": time.time() + 3600}
        (self.state / "silences.json").write_text(json.dumps({"silences": [cpu, *silences]}))

    # files
    @property
    def state(self) -> Path:
        return self.folder / "state"

    def outbox(self) -> list[dict]:
        path = self.state / "outbox.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def write_outbox(self, messages: list[dict]) -> None:
        (self.state / "outbox.jsonl").write_text("".join(json.dumps(m) + "\n" for m in messages))

    def alert_state(self) -> dict:
        return json.loads((self.state / "alerts.json").read_text())

    def log(self) -> list[dict]:
        path = self.folder / "logs" / "health.log"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def assert_token_nowhere(self) -> None:
        """The token is in no output of any run and in no file under logs/ and state/, except
        the 0600 copy of a token read from Vault (README: Alerts and Telegram)."""
        leaks = [f"run {i} {stream}" for i, run in enumerate(self.runs)
                 for stream, text in (("stdout", run.stdout), ("stderr", run.stderr)) if SECRET in text]
        copy = self.state / TOKEN_COPY
        for folder in (self.folder / "logs", self.state):
            leaks += [str(p) for p in folder.rglob("*")
                      if p.is_file() and p != copy and SECRET.encode() in p.read_bytes()]
        assert self.runs and leaks == []
        if copy.exists():
            assert copy.stat().st_mode & 0o777 == 0o600


@pytest.fixture
def host(tmp_path, telegram, web):
    return Host(tmp_path, telegram, web)


def texts(received) -> list[str]:
    return [html_to_plain(r.text) for r in received]


def silenced(run, cpu=False) -> list[str]:
    """Check ids this run silenced, from its log records (cpu aside unless asked)."""
    return [r["check"] for r in run.log if r.get("event") == "silenced" and (cpu or r["check"] != "cpu")]


def exit_code_matches_verdict(run) -> bool:
    return run.code == {"ok": 0, "warning": 1, "critical": 2, "unknown": 3}[run.data["overall_status"]]


# --- the life of one alert -----------------------------------------------------------------

def test_critical_alert_is_sent_once_then_reminded_after_repeat_interval_then_resolved(host, telegram):
    host.alerts = 'repeat_interval = "1h"'
    first = host.health(disk="critical")
    assert first.code == 2
    assert first.notifications["sent"] == 1 and first.notifications["queued"] == 0
    (alert,) = telegram.delivered
    assert alert.chat_id == CHAT and alert.parse_mode == "HTML" and alert.disable_notification is False
    assert alert.token == TOKEN
    plain = html_to_plain(alert.text)
    assert "🚨 CRITICAL" in plain and re.search(r"disk:/ — disk [\d.]+% > 0%", plain), plain

    for _ in range(2):  # the next cron runs: still critical, already told
        run = host.health(disk="critical")
        assert run.code == 2 and run.notifications["sent"] == 0
    assert len(telegram.delivered) == 1

    # An hour passes (the alert state is moved into the past: no sleeping, however slow the runs).
    _age_alert_state(host.state, 3600 + 60)
    reminder = host.health(disk="critical")
    assert reminder.notifications["sent"] == 1
    assert len(telegram.delivered) == 2
    assert "(reminder)" in texts(telegram.delivered)[1]
    assert telegram.delivered[1].disable_notification is False

    resolved = host.health(disk="ok")
    assert resolved.data["checks"]["disk:/"]["status"] == "ok" and exit_code_matches_verdict(resolved)
    assert resolved.notifications["sent"] == 1
    assert len(telegram.delivered) == 3
    last = telegram.delivered[2]
    assert "✅ RESOLVED" in html_to_plain(last.text) and "disk:/ ok again after" in html_to_plain(last.text)
    assert last.disable_notification is True

    assert host.health(disk="ok").notifications["sent"] == 0
    assert len(telegram.delivered) == 3
    assert all(r.stderr == "" for r in host.runs)
    host.assert_token_nowhere()


def _age_alert_state(state, seconds: float) -> None:
    """Move the times in alerts.json `seconds` into the past: as if the runs were that much older."""
    path = state / "alerts.json"
    data = json.loads(path.read_text())
    for entry in data["checks"].values():
        for key in ("since", "notified_at", "began", "changed_at", "chain_since"):
            if isinstance(entry.get(key), (int, float)):
                entry[key] -= seconds
    path.write_text(json.dumps(data))


def test_alert_after_two_runs_waits_for_the_second_failing_run(host, telegram):
    host.alerts = "alert_after = 2"
    assert host.health(disk="critical").notifications["sent"] == 0
    assert telegram.received == []
    assert host.health(disk="critical").notifications["sent"] == 1
    assert len(telegram.delivered) == 1


def test_several_failing_checks_make_one_message_per_chat_worst_first(host, telegram):
    host.chat_ids = [CHAT, "-100456"]
    run = host.health(disk="critical", inodes="warning")
    assert run.code == 2
    assert run.notifications["sent"] == 2
    assert sorted(r.chat_id for r in telegram.delivered) == sorted([CHAT, "-100456"])
    for plain in texts(telegram.delivered):
        assert plain.index("🚨 CRITICAL") < plain.index("disk:/") < plain.index("⚠️ WARNING") < plain.index("inodes:/")
    assert host.health(disk="critical", inodes="warning").notifications["sent"] == 0
    assert len(telegram.delivered) == 2


def test_the_alert_names_host_environment_value_and_when_it_began(host, telegram):
    run = host.health(disk="critical")
    check = run.data["checks"]["disk:/"]
    plain = texts(telegram.delivered)[0]
    assert f"{run.data['host']} (prod)" in plain
    assert f"{check['value']:g}%" in plain and check["message"] in plain
    assert "since " in plain


# --- Telegram down, rate limiting, errors ---------------------------------------------------------

def test_telegram_down_for_three_runs_then_back_loses_nothing_and_duplicates_nothing(host, telegram):
    telegram.stop()  # connection refused
    down = [host.scraper("critical"), host.scraper("warning", "-vv"), host.scraper("ok")]
    assert [r.code for r in down] == [2, 1, 0]  # the checks decide, never the delivery
    assert [r.notifications["queued"] for r in down] == [1, 1, 1]
    assert [r.notifications["outbox"] for r in down] == [1, 2, 3]
    assert [r.notifications["sent"] for r in down] == [0, 0, 0]
    assert [m["chat_id"] for m in host.outbox()] == [CHAT] * 3
    assert "connection refused" in host.outbox()[0]["last_error"]
    assert "urllib3" in down[1].stderr  # -vv shows the HTTP library's lines, masked

    telegram.start()
    back = host.scraper("ok")
    assert back.code == 0
    assert back.notifications["sent"] == 3 and back.notifications["outbox"] == 0
    plains = texts(telegram.delivered)
    assert "🚨 CRITICAL" in plains[0] and "scraper:uniswap" in plains[0]
    assert "⚠️ WARNING" in plains[1] and "(was critical)" in plains[1]
    assert "✅ RESOLVED" in plains[2]
    assert [r.disable_notification for r in telegram.delivered] == [False, False, True]
    assert host.outbox() == []

    for _ in range(2):
        assert host.scraper("ok").notifications["sent"] == 0
    assert len(telegram.delivered) == 3
    host.assert_token_nowhere()


def test_a_failing_delivery_never_changes_the_exit_code(host, telegram):
    telegram.always(unauthorized())
    assert host.scraper("critical").code == 2
    run = host.scraper("ok")  # the RESOLVED and the old alert both fail to go out
    assert run.code == 0 and run.data["overall_status"] == "ok"
    assert run.notifications["failed"] >= 1 and run.notifications["outbox"] == 2
    host.assert_token_nowhere()


def test_a_rate_limit_storm_keeps_messages_in_the_outbox_in_order_until_telegram_allows_them(host, telegram):
    telegram.fail(too_many_requests(30))
    before = time.time()
    first = host.health(disk="critical")
    assert first.code == 2 and first.seconds < 10  # not waited for
    assert first.notifications["sent"] == 0 and first.notifications["queued"] == 1
    (kept,) = host.outbox()
    assert before + 29 <= kept["not_before"] <= time.time() + 31

    second = host.health(disk="warning")  # a new message queues behind the first, in order
    assert second.notifications["sent"] == 0 and second.notifications["outbox"] == 2
    assert len(telegram.received) == 1  # Telegram said wait: nothing was sent meanwhile

    def thirty_seconds_pass():
        messages = host.outbox()
        assert [m["alerts"] for m in messages] == [[["disk:/", "critical"]], [["disk:/", "warning"]]]
        messages[0]["not_before"] = time.time() - 1
        host.write_outbox(messages)

    thirty_seconds_pass()
    telegram.fail(too_many_requests(30))  # the storm goes on
    assert host.health(disk="warning").notifications["outbox"] == 2
    thirty_seconds_pass()
    later = host.health(disk="warning")
    assert later.notifications["sent"] == 2 and later.notifications["outbox"] == 0, texts(telegram.delivered)
    plains = texts(telegram.delivered)
    assert "🚨 CRITICAL" in plains[0] and "⚠️ WARNING" in plains[1]
    assert host.health(disk="warning").notifications["sent"] == 0
    assert len(telegram.delivered) == 2
    host.assert_token_nowhere()


def test_the_outbox_is_delivered_by_the_next_run_of_any_command(host, telegram):
    telegram.fail(too_many_requests(30))
    host.health(disk="critical")
    messages = host.outbox()
    messages[0]["not_before"] = time.time() - 1
    host.write_outbox(messages)
    run = host.monitor("backup-check", "--format", "json")
    assert run.code == 0 and run.notifications["sent"] == 1 and run.notifications["outbox"] == 0
    assert "disk:/" in texts(telegram.delivered)[0]
    assert host.health(disk="critical").notifications["sent"] == 0  # health's alert state was left alone
    assert len(telegram.delivered) == 1


def test_a_short_rate_limit_is_waited_for_and_delivered_in_the_same_run(host, telegram):
    telegram.fail(too_many_requests(1))
    run = host.health(disk="critical")
    assert run.notifications["sent"] == 1 and run.notifications["outbox"] == 0
    assert [r.status for r in telegram.received] == [429, 200]
    assert run.seconds >= 1
    host.assert_token_nowhere()


def test_server_errors_are_retried_briefly_then_kept_for_the_next_run(host, telegram):
    telegram.fail(server_error())
    run = host.health(disk="critical")
    assert run.notifications["sent"] == 1  # one 500, then the retry went through
    assert [r.status for r in telegram.received] == [500, 200]

    telegram.always(server_error())
    run = host.health(disk="warning")
    assert run.data["checks"]["disk:/"]["status"] == "warning" and exit_code_matches_verdict(run)
    assert run.notifications["sent"] == 0 and run.notifications["outbox"] == 1
    assert [r.status for r in telegram.received[2:]] == [500, 500, 500]  # bounded
    assert run.seconds < 10

    telegram.always(None)
    run = host.health(disk="warning")
    assert run.notifications["sent"] == 1 and run.notifications["outbox"] == 0
    assert "⚠️ WARNING" in texts(telegram.delivered)[-1]
    host.assert_token_nowhere()


def test_a_hanging_telegram_does_not_hold_the_run_and_the_message_is_kept(host, telegram):
    host.telegram_extra = 'timeout = "1s"'
    telegram.fail(HANG)
    run = host.health(disk="critical")
    assert run.code == 2 and run.seconds < 5
    assert run.notifications["outbox"] == 1
    run = host.health(disk="critical")
    assert run.notifications["sent"] == 1 and run.notifications["outbox"] == 0
    host.assert_token_nowhere()


def test_a_telegram_trickling_its_answer_to_three_chats_costs_at_most_the_timeout_per_chat(host, telegram):
    host.chat_ids = [CHAT, "-100456", "-100789"]
    host.telegram_extra = 'timeout = "2s"'
    telegram.always(trickling_body(interval=0.2))  # a byte every 0.2 s: no per-read timeout ever trips
    run = host.health(disk="critical")
    # The contract: telegram.timeout x chats + 2 s = 8 s. Starting Python and running the
    # checks fits in the 2 s on a busy CI machine; the old client read for ever.
    assert run.seconds < 2 * 3 + 2
    assert run.code == 2
    assert run.notifications["sent"] == 0 and run.notifications["queued"] == 3
    assert sorted(m["chat_id"] for m in host.outbox()) == sorted(host.chat_ids)
    # Telegram did not answer the first chat's message: the others were left untried, not each waited on.
    tried = [m for m in host.outbox() if m["attempts"]]
    assert len(tried) == 1 and "within 2s" in tried[0]["last_error"]

    telegram.always(None)
    run = host.health(disk="critical")  # no lock left behind; the kept messages go out
    assert run.code == 2 and run.notifications["sent"] == 3 and run.notifications["outbox"] == 0
    host.assert_token_nowhere()


# argv: RSS_FILE COMMAND...: run COMMAND, write its peak RSS (KB) to RSS_FILE, exit with its code.
PEAK_RSS_LAUNCHER = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as out:
    out.write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
"""


def test_a_telegram_answering_gigabytes_is_read_no_further_than_64_kb(host, telegram):

    telegram.always(endless_body())
    path = host.folder / "monitor.toml"
    path.write_text(host.config("critical", "ok", "ok"))
    out, err = host.folder / "stdout", host.folder / "stderr"
    started = time.monotonic()
    with open(out, "w") as stdout_file, open(err, "w") as stderr_file:
        # The peak memory is measured by a small launcher: a child forked straight from
        # this pytest process would count pytest's own pages (Linux keeps the parent's
        # high-water mark across exec), hundreds of MB late in the suite.
        rss_file = host.folder / "peak_rss_kb"
        proc = subprocess.run([sys.executable, "-c", PEAK_RSS_LAUNCHER, str(rss_file), MONITOR, "health",
                               "--format", "json", "--config", str(path)], cwd=host.folder,
                              env=clean_env({"TELEGRAM_BOT_TOKEN": TOKEN}), stdout=stdout_file,
                              stderr=stderr_file, stdin=subprocess.DEVNULL, timeout=60)
    seconds = time.monotonic() - started
    stdout, stderr = out.read_text(), err.read_text()
    assert proc.returncode == 2, stderr
    assert seconds < 8  # the 10 s deadline is not even needed (generous for a busy CI machine)
    peak_kb = int(rss_file.read_text())
    assert peak_kb < 150_000  # KB; a whole run is ~40 MB; reading on would take them all
    data = monitor_json(stdout)
    assert data["notifications"]["queued"] == 1 and data["notifications"]["sent"] == 0
    assert "64 KB" in stderr and "api_url" in stderr  # a configuration error: said once on stderr
    (kept,) = host.outbox()
    assert "64 KB" in kept["last_error"]


def test_alerts_waiting_in_the_outbox_go_before_info_and_report_texts_each_in_order(host, telegram):
    old = time.time() - 600

    def waiting(n, text, alerts):
        return {"id": f"w{n}", "chat_id": CHAT, "text": text, "disable_notification": not alerts,
                "created": old + n, "not_before": None, "attempts": 1, "last_error": "rate limited",
                "alerts": alerts}

    host.write_outbox([waiting(1, "report part 1", []), waiting(2, "scraper critical", [["scraper:uniswap", "critical"]]),
                       waiting(3, "report part 2", []), waiting(4, "scraper resolved", [["scraper:uniswap", "ok"]]),
                       waiting(5, "report part 3", [])])
    run = host.health(disk="critical")
    assert run.notifications["sent"] == 6 and run.notifications["outbox"] == 0
    plains = texts(telegram.delivered)
    assert plains[:2] == ["scraper critical", "scraper resolved"]
    assert "🚨 CRITICAL" in plains[2] and "disk:/" in plains[2]
    assert plains[3:] == ["report part 1", "report part 2", "report part 3"]


def test_a_migration_learnt_while_delivering_only_the_outbox_is_remembered(host, telegram):
    # The run that delivers a waiting alert changes no alert entry (backup-check has no
    # checks here): the migration Telegram answered must still be saved.
    telegram.fail(unauthorized())
    host.health(disk="critical")
    assert len(host.outbox()) == 1 and host.alert_state()["chat_migrations"] == {}
    telegram.fail(migrated(-1009876543210))
    run = host.monitor("backup-check", disk="critical")
    assert run.notifications["sent"] == 1 and host.outbox() == []
    assert host.alert_state()["chat_migrations"] == {CHAT: "-1009876543210"}


def test_a_parse_error_is_resent_once_as_plain_text(host, telegram):
    telegram.fail(parse_error())
    run = host.health(disk="critical")
    assert run.notifications["sent"] == 1
    assert [r.status for r in telegram.received] == [400, 200]
    plain = telegram.delivered[0]
    assert plain.parse_mode is None
    assert re.search(r"</?[a-z]+>", plain.text) is None
    assert "🚨 CRITICAL" in plain.text and "disk:/" in plain.text
    host.assert_token_nowhere()


def test_a_group_upgraded_to_a_supergroup_is_followed_remembered_and_reported(host, telegram):
    telegram.fail(migrated(-1009876543210))
    run = host.health(disk="critical")
    assert run.notifications["sent"] == 1
    assert [(r.chat_id, r.status) for r in telegram.received] == [(CHAT, 400), ("-1009876543210", 200)]
    assert "-1009876543210" in run.stderr and "update telegram.chat_ids" in run.stderr
    assert host.alert_state()["chat_migrations"] == {CHAT: "-1009876543210"}
    assert any(r.get("event") == "chat_migrated" for r in host.log())

    run = host.health(disk="warning")  # the config still says the old id
    assert run.notifications["sent"] == 1
    assert [r.chat_id for r in telegram.received[2:]] == ["-1009876543210"]
    host.assert_token_nowhere()


def test_a_rejected_token_is_a_configuration_error_and_the_messages_wait_for_the_fix(host, telegram):
    telegram.always(unauthorized())
    first = host.health(disk="critical")
    assert first.code == 2  # the checks decide the exit code
    errors = [line for line in first.stderr.splitlines() if "configuration error" in line]
    assert len(errors) == 1 and "401" in errors[0] and "token" in errors[0]
    assert any(r["levelname"] == "ERROR" and r.get("event") == "telegram_config_error" for r in host.log())
    assert first.notifications["queued"] == 1 and len(telegram.received) == 1  # not retried

    second = host.health(disk="warning")
    assert second.notifications["outbox"] == 2

    telegram.always(None)  # the operator fixed the token
    fixed = host.health(disk="warning")
    assert fixed.stderr == ""
    assert fixed.notifications["sent"] == 2 and fixed.notifications["outbox"] == 0
    plains = texts(telegram.delivered)
    assert "🚨 CRITICAL" in plains[0] and "⚠️ WARNING" in plains[1]
    assert host.health(disk="warning").notifications["sent"] == 0
    assert len(telegram.delivered) == 2
    host.assert_token_nowhere()


def test_a_chat_that_refuses_the_bot_neither_blocks_nor_duplicates_the_other_chats(host, telegram):
    host.chat_ids = [CHAT, "-100456"]
    telegram.refuse_chat("-100456", forbidden())
    first = host.health(disk="critical")
    assert first.notifications["sent"] == 1 and first.notifications["queued"] == 1
    assert [r.chat_id for r in telegram.delivered] == [CHAT]
    (error,) = [line for line in first.stderr.splitlines() if "configuration error" in line]
    assert "403" in error and "-100456" in error

    assert host.health(disk="critical").notifications["sent"] == 0  # the kept one is retried, refused again
    telegram.refuse_chat("-100456", None)  # the bot was added back
    assert host.health(disk="critical").notifications["sent"] == 1
    assert sorted(r.chat_id for r in telegram.delivered) == sorted([CHAT, "-100456"])
    assert host.health(disk="critical").notifications["sent"] == 0
    assert len(telegram.delivered) == 2
    host.assert_token_nowhere()


def test_outbox_messages_older_than_outbox_max_age_are_dropped_with_an_error_naming_them(host, telegram):
    telegram.fail(too_many_requests(30))
    host.health(disk="critical")
    (kept,) = host.outbox()
    kept["created"] -= 25 * 3600  # outbox_max_age is 24h by default
    host.write_outbox([kept])

    run = host.health(disk="critical")
    assert run.notifications["outbox"] == 0 and run.notifications["sent"] == 0
    assert len(telegram.delivered) == 0
    dropped = [r for r in host.log() if r.get("event") == "outbox_dropped"]
    assert len(dropped) == 1 and dropped[0]["levelname"] == "ERROR"
    assert kept["id"] in dropped[0]["message"] and "disk:/" in dropped[0]["message"]
    host.assert_token_nowhere()


def test_debug_output_of_the_http_library_never_shows_the_token(host, telegram):
    run = host.health("-vv", disk="critical")
    assert run.notifications["sent"] == 1
    assert "/sendMessage" in run.stderr  # urllib3's request line is there, token masked
    assert SECRET not in run.stderr
    host.assert_token_nowhere()


def test_the_token_can_come_from_a_file_beside_the_config(host, telegram):
    (host.folder / "bot.token").write_text(TOKEN + "\n")
    host.telegram_extra = 'token_file = "bot.token"'
    run = host.health(disk="critical", token=None)
    assert run.notifications["sent"] == 1
    assert telegram.delivered[0].token == TOKEN
    host.assert_token_nowhere()


def test_without_a_bot_token_alerts_wait_in_the_outbox_cron_hears_of_it_and_a_run_with_one_delivers(
        host, telegram):
    # Cron's environment has no TELEGRAM_BOT_TOKEN: the README's cron lines used to drop every alert.
    first = host.monitor("health", "--quiet", disk="critical", token=None)
    assert first.code == 2 and first.stdout == ""  # the checks decide the exit code
    (line,) = first.stderr.splitlines()  # one line, printed even with --quiet: cron mails it
    assert "no bot token" in line and "$TELEGRAM_BOT_TOKEN is not set" in line and "outbox" in line
    assert telegram.received == []
    (record,) = [r for r in first.log if r.get("event") == "telegram_no_token"]
    assert record["levelname"] == "ERROR"
    (kept,) = host.outbox()
    assert "disk:/" in html_to_plain(kept["text"])

    second = host.health(disk="ok", token=None)
    assert second.data["checks"]["disk:/"]["status"] == "ok" and exit_code_matches_verdict(second)
    assert len(second.stderr.splitlines()) == 1, second.stderr
    assert second.notifications["queued"] >= 1 and second.notifications["outbox"] >= 2

    fixed = host.health(disk="ok")  # the first run with a token
    assert fixed.stderr == ""
    assert fixed.notifications["sent"] == second.notifications["outbox"] and fixed.notifications["outbox"] == 0
    plains = texts(telegram.delivered)
    assert "🚨 CRITICAL" in plains[0] and "disk:/" in plains[0]
    assert any("✅ RESOLVED" in p and "disk:/" in p for p in plains[1:])
    host.assert_token_nowhere()


def test_an_unreadable_token_file_is_named_on_stderr_and_the_alert_kept(host, telegram):
    host.telegram_extra = 'token_file = "missing.token"'
    run = host.health(disk="critical", token=None)
    assert run.code == 2 and run.notifications["queued"] == 1
    (line,) = run.stderr.splitlines()
    assert "cannot read telegram.token_file" in line and "missing.token" in line
    (host.folder / "missing.token").write_text(TOKEN + "\n")
    run = host.health(disk="critical", token=None)
    assert run.stderr == "" and run.notifications["sent"] == 1
    host.assert_token_nowhere()


def test_empty_chat_ids_means_notifications_off_and_the_run_goes_on(host, telegram):
    host.chat_ids = []
    run = host.health(disk="critical")
    assert run.code == 2 and telegram.received == []
    assert any(r.get("event") == "notifications_off" for r in host.log())


def test_a_chat_id_that_is_neither_numeric_nor_a_channel_is_a_config_error(host, telegram):
    host.chat_ids = ["my group"]
    run = host.health(disk="critical")
    assert run.code == 3
    assert "telegram.chat_ids" in run.stderr and run.stdout == ""
    assert telegram.received == []


# --- the bot token in Vault, while Vault is sealed or down ----------------------------------------

VAULT_ROOT = "e2e-vault-root-token"
TOKEN_REF = "secret/monitor#telegram_token"


@pytest.fixture(scope="module")
def bao():
    """A real OpenBao dev server holding the bot token."""
    import hvac

    from tests.openbao import dev_server

    with dev_server(VAULT_ROOT) as server:
        hvac.Client(url=server.addr, token=VAULT_ROOT, timeout=5).secrets.kv.v2.create_or_update_secret(
            path="monitor", mount_point="secret", secret={"telegram_token": TOKEN})
        yield server


@pytest.fixture(scope="module")
def sealed_bao():
    """Another one holding the bot token, sealed."""
    import hvac

    from tests.openbao import dev_server

    with dev_server(VAULT_ROOT) as server:
        root = hvac.Client(url=server.addr, token=VAULT_ROOT, timeout=5)
        root.secrets.kv.v2.create_or_update_secret(path="monitor", mount_point="secret",
                                                   secret={"telegram_token": TOKEN})
        root.sys.seal()
        yield server


def outage_url(outage: str, sealed_bao) -> str:
    from tests.openbao import unused_url

    return sealed_bao.addr if outage == "sealed" else unused_url()


def vault_at(host: Host, url: str) -> None:
    """Read the bot token from Vault at `url` (and check that Vault)."""
    (host.folder / "vault.token").write_text(VAULT_ROOT)
    (host.folder / "vault.token").chmod(0o600)
    host.telegram_extra = f'token_vault = "{TOKEN_REF}"'
    host.extra = (f'[vault]\nurl = "{url}"\ntoken_file = "vault.token"\ntimeout = "2s"\n'
                  "latency_ms = { warning = 100000, critical = 100000 }\n")  # up or not decides, not speed
    seed_cpu_baseline(host.state)  # these tests judge exit codes: no 0.1 s CPU sample on a busy machine


@pytest.mark.parametrize("outage", ["down", "sealed"])
def test_with_the_token_in_vault_and_vault_out_from_the_start_alerts_wait_until_vault_is_back(
        host, telegram, bao, sealed_bao, outage):
    vault_at(host, outage_url(outage, sealed_bao))
    first = host.health(disk="critical", token=None)
    assert first.code == 2 and first.data["checks"]["vault"]["status"] == "critical"
    assert telegram.received == []
    (line,) = first.stderr.splitlines()
    assert "no bot token" in line and TOKEN_REF in line
    assert ("sealed" if outage == "sealed" else "unreachable") in line
    assert first.notifications["queued"] == 1
    assert not (host.state / TOKEN_COPY).exists()

    vault_at(host, bao.addr)  # Vault is back
    back = host.health(disk="ok", token=None)
    assert back.stderr == "" and back.notifications["outbox"] == 0
    assert {r.token for r in telegram.delivered} == {TOKEN}
    plains = texts(telegram.delivered)
    assert "🚨 CRITICAL" in plains[0] and "disk:/" in plains[0] and "vault" in plains[0]
    assert "✅ RESOLVED" in plains[-1] and "vault ok again" in plains[-1]
    host.assert_token_nowhere()


@pytest.mark.parametrize("outage", ["down", "sealed"])
def test_the_vault_alert_goes_out_with_the_last_token_read_from_vault_and_so_does_its_resolved(
        host, telegram, bao, sealed_bao, outage):
    vault_at(host, bao.addr)
    assert host.health(token=None).code == 0
    copy = host.state / TOKEN_COPY
    assert copy.stat().st_mode & 0o777 == 0o600 and TOKEN in copy.read_text()

    vault_at(host, outage_url(outage, sealed_bao))
    out = host.health(token=None)
    assert out.code == 2 and out.data["checks"]["vault"]["status"] == "critical"
    assert out.stderr == "" and out.notifications["sent"] == 1
    (alert,) = telegram.delivered
    assert alert.token == TOKEN and "vault" in html_to_plain(alert.text)
    (record,) = [r for r in out.log if r.get("event") == "bot_token_copy"]
    assert record["levelname"] == "WARNING" and TOKEN_COPY in record["message"]

    vault_at(host, bao.addr)
    back = host.health(token=None)
    assert back.code == 0 and back.notifications["sent"] == 1
    assert "✅ RESOLVED" in texts(telegram.delivered)[-1]
    host.assert_token_nowhere()


def test_a_copy_of_another_secret_is_not_used(host, telegram, sealed_bao):
    vault_at(host, sealed_bao.addr)
    from monitor import state

    state.atomic_write(str(host.state / TOKEN_COPY), json.dumps({"ref": "secret/other#key", "token": TOKEN}).encode())
    run = host.health(token=None)
    assert run.code == 2 and telegram.received == [] and run.notifications["queued"] == 1
    assert "no bot token" in run.stderr


# --- silences -------------------------------------------------------------------------------------

def test_a_silenced_check_is_evaluated_and_logged_but_not_sent_until_the_silence_is_removed(host, telegram):
    added = host.monitor("silence", "add", "disk:*", "--for", "1h", "--reason", "resizing the volume")
    assert added.code == 0, added.stderr
    silence_id = re.search(r"\[id (\w+)\]", added.stdout).group(1)
    assert re.search(rf"^{silence_id} +disk:\* .*resizing the volume$", host.monitor("silence", "list").stdout, re.M)

    run = host.health(disk="critical")
    assert run.code == 2 and run.data["checks"]["disk:/"]["status"] == "critical"
    assert silenced(run) == ["disk:/"]
    assert run.notifications["silenced"] == len(silenced(run, cpu=True)) and run.notifications["sent"] == 0
    assert telegram.received == []
    (record,) = [r for r in run.log if r.get("check") == "disk:/" and r.get("event") == "silenced"]
    assert "resizing the volume" in record["message"]

    removed = host.monitor("silence", "remove", silence_id)
    assert removed.code == 0
    assert silence_id not in host.monitor("silence", "list").stdout
    run = host.health(disk="critical")
    assert run.notifications["sent"] == 1 and silenced(run) == []
    assert "disk:/" in texts(telegram.delivered)[0]


def test_a_silence_only_mutes_matching_checks(host, telegram):
    host.monitor("silence", "add", "disk:*", "--for", "1h")
    run = host.health(disk="critical", inodes="warning")
    assert silenced(run) == ["disk:/"] and run.notifications["sent"] == 1
    (plain,) = texts(telegram.delivered)
    assert "inodes:/" in plain and "disk:/" not in plain


@pytest.mark.parametrize("duration", ["0s", "-5m", "soon"])
def test_a_silence_must_last_a_positive_duration(host, duration):
    run = host.monitor("silence", "add", "disk:*", "--for", duration)
    assert run.code == 3
    assert "--for" in run.stderr and "Traceback" not in run.stderr
    assert "disk:*" not in host.monitor("silence", "list").stdout


def test_a_silence_pattern_matching_nothing_is_accepted_with_a_note(host):
    run = host.monitor("silence", "add", "scraper:nope*", "--for", "2h")
    assert run.code == 0
    assert "matches no check" in run.stdout
    assert "scraper:nope*" in host.monitor("silence", "list").stdout


def test_an_expired_silence_is_ignored(host, telegram):
    host.write_silences([{"id": "old1", "pattern": "disk:*", "until": time.time() - 60, "reason": "",
                          "created": 0}])
    run = host.health(disk="critical")
    assert silenced(run) == [] and run.notifications["sent"] == 1
    assert "disk:/" in texts(telegram.delivered)[0]
    assert "old1" not in host.monitor("silence", "list").stdout


def test_a_silence_that_cannot_be_saved_is_one_line_on_stderr_and_exit_3(tmp_path):
    config = tmp_path / "monitor.toml"
    config.write_text('[paths]\nstate = "/proc/no-such-state-folder"\n')  # not creatable, even by root
    for args in (["add", "disk:*", "--for", "1h"], ["remove", "abc123"]):
        proc = subprocess.run([MONITOR, "silence", *args, "--config", str(config)], cwd=tmp_path, env=clean_env(),
                              capture_output=True, text=True, timeout=30)
        assert proc.returncode == 3
        assert len(proc.stderr.splitlines()) == 1 and "/proc/no-such-state-folder" in proc.stderr


def test_removing_an_unknown_silence_exits_3(host):
    run = host.monitor("silence", "remove", "nosuchid")
    assert run.code == 3 and "nosuchid" in run.stderr


# --- notify test ------------------------------------------------------------------------------

def test_notify_test_sends_to_every_chat_and_says_so(host, telegram):
    host.chat_ids = [CHAT, "@opsroom"]
    run = host.monitor("notify", "test")
    assert run.code == 0, run.stderr
    assert sorted(r.chat_id for r in telegram.delivered) == sorted([CHAT, "@opsroom"])
    assert all("ℹ️ test from" in t for t in texts(telegram.delivered))
    assert CHAT in run.stdout and "@opsroom" in run.stdout
    host.assert_token_nowhere()


def test_notify_test_fails_when_the_token_is_rejected_without_printing_it(host, telegram):
    telegram.always(unauthorized())
    run = host.monitor("notify", "test")
    assert run.code != 0
    assert "401" in run.stdout + run.stderr and CHAT in run.stdout
    host.assert_token_nowhere()


# --- --no-notify and --dry-run ----------------------------------------------------------------

def test_no_notify_sends_nothing_and_the_next_normal_run_alerts(host, telegram):
    run = host.health("--no-notify", disk="critical")
    assert run.code == 2 and run.notifications["sent"] == 0
    assert telegram.received == []
    assert host.health(disk="critical").notifications["sent"] == 1


def test_dry_run_prints_the_message_in_json_and_changes_nothing(host, telegram):
    host.health(disk="critical")
    state_before = (host.state / "alerts.json").read_bytes()
    run = host.health("--dry-run", disk="warning")
    assert run.data["checks"]["disk:/"]["status"] == "warning" and exit_code_matches_verdict(run)
    (would,) = run.notifications["dry_run"]
    assert would["chat_id"] == CHAT and "⚠️ WARNING" in html_to_plain(would["text"])
    assert len(telegram.received) == 1  # only the first, real run's message
    assert (host.state / "alerts.json").read_bytes() == state_before
    assert host.outbox() == []
    run = host.health(disk="warning")
    assert run.notifications["sent"] == 1  # the dry run did not count as told


def test_no_notify_and_dry_run_still_report_what_waits_in_the_outbox_and_leave_it_alone(host, telegram):
    telegram.fail(too_many_requests(30))
    host.health(disk="critical")
    waiting = (host.state / "outbox.jsonl").read_bytes()
    (host.folder / "prom").mkdir()
    run = host.health("--no-notify", "--textfile-dir", str(host.folder / "prom"), disk="critical")
    assert run.notifications["outbox"] == 1
    assert "monitor_outbox_messages 1" in (host.folder / "prom" / "monitor_health.prom").read_text()
    assert host.health("--dry-run", disk="critical").notifications["outbox"] == 1
    assert (host.state / "outbox.jsonl").read_bytes() == waiting
    assert len(telegram.received) == 1


def test_dry_run_in_text_mode_prints_the_message_after_the_table(host, telegram):
    run = host.monitor("health", "--format", "text", "--dry-run", disk="critical")
    assert run.code == 2
    table = run.stdout.index("disk:/")
    marker = run.stdout.index(f"would send to chat {CHAT}")
    assert table < marker
    assert "CRITICAL" in run.stdout[marker:]
    assert telegram.received == []
    assert not (host.state / "alerts.json").exists()


# --- bad input --------------------------------------------------------------------------------

def test_html_in_a_check_message_is_escaped_and_telegram_accepts_it(host, telegram):
    hostile = "/nonexistent/<b>x & y</b><html><body>503</body></html>"
    host.disk_paths = ["/", hostile]
    run = host.health()
    assert run.data["checks"][f"disk:{hostile}"]["status"] == "critical"
    assert run.notifications["sent"] == 1
    (message,) = telegram.received
    assert message.status == 200 and message.parse_mode == "HTML"  # the stand-in parses HTML as Telegram
    assert f"disk:{hostile}" in html_to_plain(message.text)


def test_a_20000_character_alert_arrives_in_chunks_under_4096(host, telegram):
    host.disk_paths = ["/", "/nonexistent/" + "x<&" * 6700]
    run = host.health()
    assert run.code == 2
    assert len(telegram.received) >= 2
    assert all(r.status == 200 and len(r.text) <= 4096 for r in telegram.received)
    assert run.notifications["outbox"] == 0
    host.assert_token_nowhere()


def test_an_unusable_outbox_line_is_set_aside_and_the_others_are_delivered(host, telegram):
    host.write_outbox([
        {"id": "bad1", "chat_id": CHAT, "text": "edited by hand", "created": "yesterday", "not_before": None},
        {"id": "good1", "chat_id": CHAT, "text": "kept from an earlier run", "created": time.time() - 60,
         "not_before": None, "attempts": 1, "alerts": [["disk:/", "critical"]]},
    ])
    run = host.health(disk="critical")
    assert run.code == 2
    assert [r.text for r in telegram.delivered][0] == "kept from an earlier run"
    assert "disk:/" in texts(telegram.delivered)[1]
    (aside,) = host.state.glob("outbox.jsonl.corrupt-*")
    assert "edited by hand" in aside.read_text()
    assert any(r.get("event") == "outbox_corrupt" for r in run.log)


@pytest.mark.parametrize("content", ['{"version": 99, "checks": {}}', "garbage{", ""])
def test_an_unreadable_or_future_alert_state_is_set_aside_and_the_run_goes_on(host, telegram, content):
    (host.state / "alerts.json").write_text(content)
    run = host.health(disk="critical")
    assert run.code == 2
    assert list(host.state.glob("alerts.json.corrupt-*"))
    assert host.alert_state()["version"] == 1
    assert run.notifications["sent"] == 1  # a duplicate alert beats silence
    assert any(r["levelname"] == "WARNING" and r.get("event") == "state_corrupt" for r in host.log())


def test_a_report_too_long_for_one_message_goes_after_its_alerts_even_under_a_rate_limit(tmp_path, telegram):
    # In process, with the real client against the stand-in: a daily report that runs to
    # several messages (a huge database value) must not hold the alert back.
    from monitor import config as config_mod
    from monitor.alerts.notify import notify
    from monitor.results import WARNING, Result

    (tmp_path / "state").mkdir()
    config = config_mod.build({"telegram": {"chat_ids": [CHAT], "api_url": telegram.api_url}}, None, str(tmp_path))
    report = "ℹ️ INFO <b>Daily report</b>\n" + "\n".join(f"source {i}: " + "9" * 90 for i in range(120))
    low = Result(WARNING, "12 opportunities, expected at least 50", 12, "", 50, None,
                 id="opportunities", kind="business")
    env = {"TELEGRAM_BOT_TOKEN": TOKEN}

    telegram.fail(too_many_requests(30))  # the first try is refused: everything waits
    first = notify(config, "daily-report", [low], None, "vps-1", message=(report, True), environ=env)
    assert first["sent"] == 0 and first["queued"] >= 4  # the report is several messages
    kept = [json.loads(line) for line in (tmp_path / "state" / "outbox.jsonl").read_text().splitlines()]
    for message in kept:
        message["not_before"] = None  # thirty seconds later
    (tmp_path / "state" / "outbox.jsonl").write_text("".join(json.dumps(m) + "\n" for m in kept))

    later = notify(config, "daily-report", [low], None, "vps-1", environ=env)
    assert later["sent"] == first["queued"] and later["outbox"] == 0
    plains = texts(telegram.delivered)
    assert "⚠️ WARNING" in plains[0] and "opportunities" in plains[0] and "Daily report" not in plains[0]
    assert plains[1].startswith("ℹ️ INFO Daily report")
    numbers = [int(n) for p in plains[1:] for n in re.findall(r"^source (\d+):", p, re.M)]
    assert numbers == list(range(120))  # the whole report, in order
    assert telegram.delivered[0].disable_notification is False  # the warning rings
