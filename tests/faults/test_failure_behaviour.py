"""The rest of SPEC "Failure behaviour", each under a fault: missing disks, damaged state,
a stdout nobody reads, a TCP peer that never answers, an alert that cannot be kept.
"""

import json
import subprocess

from tests.conftest import clean_env
from tests.faults.conftest import HOST_CHECKS, delivered_checks, full_disk, no_traceback
from tests.openbao import silent_peer
from tests.telegram_standin import unauthorized


def test_a_missing_disk_path_is_critical_for_that_path_alone(install, telegram):
    missing = str(install.folder / "not-mounted")
    install.system_extra = f'disk_paths = ["/", "{missing}"]\n'
    run = install.health()

    checks = run.data["checks"]
    assert checks[f"disk:{missing}"]["status"] == "critical" and "does not exist" in checks[f"disk:{missing}"]["message"]
    assert checks[f"inodes:{missing}"]["status"] == "critical"
    assert checks["disk:/"]["status"] == "ok" and checks["inodes:/"]["status"] == "ok"
    assert run.code == 2 and delivered_checks(telegram, [f"disk:{missing}", "disk:/"]) == {f"disk:{missing}"}


def test_damaged_state_files_are_set_aside_with_a_warning_and_the_alert_is_told_again(install, telegram):
    install.scrapers = ["feed"]
    first = install.health()
    assert first.code == 2 and len(telegram.delivered) == 1     # told once; the next run would be quiet
    state = install.state
    (state / "alerts.json").write_text("")                        # empty
    (state / "counters.json").write_text('{"cpu": {"boot": ')       # cut short
    waiting = {"id": "abc123", "chat_id": "-100777", "text": "<b>kept</b> from before", "created": 1e12,
               "alerts": [["disk:/", "critical"]]}  # an alert too: alerts go oldest first
    (state / "outbox.jsonl").write_text("not json at all\n" + json.dumps(waiting) + "\n")

    run = install.health()
    assert run.code == 2 and no_traceback(run) and "state_write_error" not in run.data
    aside = sorted(p.name.split(".corrupt-")[0] for p in state.glob("*.corrupt-*"))
    assert aside == ["alerts.json", "counters.json", "outbox.jsonl"]
    warnings = [json.loads(line) for line in install.log_lines() if b'"levelname": "WARNING"' in line]
    assert {r["event"] for r in warnings} >= {"state_corrupt", "outbox_corrupt"}
    texts = [r.text for r in telegram.delivered]
    assert len(texts) == 3 and "kept" in texts[1]                 # the readable outbox line, then the alert
    assert delivered_checks(telegram, ["scraper:feed"]) == {"scraper:feed"} and "scraper:feed" in texts[2]
    json.loads((state / "alerts.json").read_text())               # and state is whole again


def test_a_tcp_peer_that_never_answers_is_critical_within_its_timeout(install, telegram):
    with silent_peer() as url:
        install.extra = (f'[[scrapers]]\nname = "mute"\nurl = "{url}/health"\ntimeout = "1s"\n'
                         f'[vault]\nurl = "{url}"\ntimeout = "1s"\n')
        run = install.health()
    assert run.seconds < 1 + 0.5 + 2.5, f"{run.seconds:.1f}s"
    checks = run.data["checks"]
    assert set(checks) == HOST_CHECKS | {"scraper:mute", "vault"}
    assert checks["scraper:mute"]["status"] == "critical" and "timed out" in checks["scraper:mute"]["message"]
    assert checks["vault"]["status"] == "critical" and "timed out" in checks["vault"]["message"]
    assert delivered_checks(telegram, ["scraper:mute", "vault"]) == {"scraper:mute", "vault"}


def test_a_stdout_on_a_full_disk_or_a_reader_that_goes_away_costs_neither_the_verdict_nor_the_alert(install,
                                                                                                   telegram):
    install.scrapers = ["feed"]
    command = " ".join(install.command("health", "--format", "json"))
    full = subprocess.run(["bash", "-c", f"{command} > /dev/full"], cwd=install.folder, capture_output=True,
                          text=True, env=clean_env(install.env), timeout=60)
    assert full.returncode == 2
    assert full.stderr == "monitor: cannot write the result to stdout: No space left on device\n"
    assert delivered_checks(telegram, ["scraper:feed"]) == {"scraper:feed"}

    install.scrapers.append("feed2")
    command = " ".join(install.command("health", "--format", "json"))
    piped = subprocess.run(["bash", "-c", f"set -o pipefail; {command} | head -c1"], cwd=install.folder,
                           capture_output=True, text=True, env=clean_env(install.env), timeout=60)
    assert piped.stdout == "{" and piped.stderr == "" and piped.returncode in (0, 2)  # head's 0, or ours
    assert delivered_checks(telegram, ["scraper:feed2"]) == {"scraper:feed2"}


def test_a_quiet_healthy_run_prints_nothing_and_a_rejected_bot_token_is_its_one_line_on_stderr(install,
                                                                                                  telegram):
    install.extra = (f'[[scrapers]]\nname = "feed"\nheartbeat_file = "{install.config}"\n'
                     'heartbeat_max_age = "1h"\n')
    quiet = install.run("health", "--only", "scraper", "--quiet")
    assert (quiet.code, quiet.stdout, quiet.stderr) == (0, "", "")   # cron mails nothing

    telegram.always(unauthorized())
    install.scrapers = ["down"]
    install.health("--only", "scraper")                           # its alert waits in the outbox (401)
    install.scrapers = []
    run = install.run("health", "--only", "scraper", "--quiet")
    assert run.code == 0 and run.stdout == ""
    # A rejected token is a configuration error a person must fix: said on stderr, once.
    (line,) = run.stderr.splitlines()
    assert line.startswith("monitor health: telegram configuration error: Telegram 401")


def test_an_alert_that_can_be_neither_sent_nor_kept_is_dropped_only_with_an_error_record_naming_it(install,
                                                                                                    telegram):
    install.scrapers = ["feed"]
    telegram.always(unauthorized())
    install.wrapper = full_disk(install.state)  # the outbox cannot be saved
    run = install.health()
    assert run.code == 2 and "state_write_error" in run.data
    errors = [json.loads(line) for line in install.log_lines() if b'"event": "outbox_write_error"' in line]
    assert len(errors) == 1 and errors[0]["levelname"] == "ERROR"
    assert "will be lost" in errors[0]["message"] and "scraper:feed" in errors[0]["message"]
