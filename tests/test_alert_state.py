"""Alert transitions, judged with explicit clocks: when the operator hears about a problem,
is reminded of it, and is told it is over (SPEC: Alerts, [alerts]); and flapping, once
end to end through the installed `monitor` and the stand-in Telegram."""

import json

from monitor.alerts import state as alert_state
from monitor.alerts import messages
from monitor.alerts.state import FLAPPING, RESOLVED
from monitor.alerts.telegram import html_to_plain
from tests.faults.conftest import Install
from tests.telegram_standin import TelegramStandIn
from monitor.results import CRITICAL, OK, UNKNOWN, WARNING, Result

T0 = 1_800_000_000.0
HOUR = 3600.0
MINUTE = 60.0


def result(status, check_id="disk:/", kind="system", message="Disk / 97% used"):
    return Result(status, message, value=97.0, unit="%", warning=90, critical=95, id=check_id, kind=kind)


class Alerts:
    """Feed runs one at a time, as cron would, keeping the entries between them.

    Like notify.py, an alert counts as told once it was handed over for delivery.
    """

    def __init__(self, alert_after=1, repeat_interval=HOUR, send_resolved=True, command="health",
                 flap_window=15 * MINUTE):
        self.entries = {}
        self.rules = (alert_after, repeat_interval, send_resolved, flap_window)
        self.command = command

    def run(self, now, *statuses_or_results, kinds_run=None, told=True):
        results = [s if isinstance(s, Result) else result(s) for s in statuses_or_results]
        alerts, self.entries = alert_state.evaluate(self.entries, results, self.command, kinds_run, now,
                                                    *self.rules)
        if told:
            alert_state.mark_notified(self.entries, alerts, now)
        return [(a.check_id, a.status) for a in alerts], alerts


def test_a_critical_check_alerts_on_its_first_run_by_default():
    a = Alerts()
    sent, alerts = a.run(T0, CRITICAL)
    assert sent == [("disk:/", CRITICAL)]
    assert alerts[0].since == T0 and not alerts[0].reminder and alerts[0].previous is None


def test_with_alert_after_2_the_first_failing_run_is_quiet_and_the_second_alerts():
    a = Alerts(alert_after=2)
    assert a.run(T0, CRITICAL)[0] == []
    sent, alerts = a.run(T0 + 300, CRITICAL)
    assert sent == [("disk:/", CRITICAL)]
    assert alerts[0].since == T0  # the problem began at the first failing run


def test_a_single_failing_run_below_alert_after_never_alerts_nor_resolves():
    a = Alerts(alert_after=2)
    assert a.run(T0, CRITICAL)[0] == []
    assert a.run(T0 + 300, OK)[0] == []
    assert a.run(T0 + 600, CRITICAL)[0] == []  # the count starts again


def test_critical_alert_is_sent_once_then_reminded_after_repeat_interval():
    a = Alerts(repeat_interval=HOUR)
    assert a.run(T0, CRITICAL)[0] == [("disk:/", CRITICAL)]
    for minutes in (5, 10, 30, 59):
        assert a.run(T0 + minutes * 60, CRITICAL)[0] == []
    sent, alerts = a.run(T0 + HOUR, CRITICAL)
    assert sent == [("disk:/", CRITICAL)] and alerts[0].reminder
    assert a.run(T0 + HOUR + 300, CRITICAL)[0] == []
    assert a.run(T0 + 2 * HOUR, CRITICAL)[0] == [("disk:/", CRITICAL)]


def test_a_warning_is_reminded_only_every_six_repeat_intervals():
    a = Alerts(repeat_interval=HOUR)
    assert a.run(T0, WARNING)[0] == [("disk:/", WARNING)]
    assert a.run(T0 + HOUR, WARNING)[0] == []
    assert a.run(T0 + 5.9 * HOUR, WARNING)[0] == []
    sent, alerts = a.run(T0 + 6 * HOUR, WARNING)
    assert sent == [("disk:/", WARNING)] and alerts[0].reminder


def test_a_change_of_severity_alerts_at_once_and_says_what_it_was():
    a = Alerts()
    a.run(T0, WARNING)
    sent, alerts = a.run(T0 + 300, CRITICAL)
    assert sent == [("disk:/", CRITICAL)]
    assert alerts[0].previous == WARNING and not alerts[0].reminder
    assert alerts[0].since == T0  # still the same problem
    sent, alerts = a.run(T0 + 600, WARNING)
    assert sent == [("disk:/", WARNING)] and alerts[0].previous == CRITICAL
    assert a.run(T0 + 900, WARNING)[0] == []


def test_recovery_sends_resolved_with_how_long_it_lasted():
    a = Alerts()
    a.run(T0, CRITICAL)
    a.run(T0 + 300, CRITICAL)
    sent, alerts = a.run(T0 + 1500, OK)
    assert sent == [("disk:/", RESOLVED)]
    assert alerts[0].duration == 1500 and alerts[0].previous == CRITICAL
    assert a.run(T0 + 1800, OK)[0] == []  # once


def test_a_resolved_held_back_by_a_silence_still_says_how_long_the_problem_lasted():
    a = Alerts()
    a.run(T0, CRITICAL)
    assert a.run(T0 + 600, OK, told=False)[0] == [("disk:/", RESOLVED)]  # silenced, or --no-notify
    sent, alerts = a.run(T0 + 3600, OK)
    assert sent == [("disk:/", RESOLVED)]
    assert alerts[0].duration == 600
    assert a.run(T0 + 3900, OK)[0] == []


def test_no_resolved_when_the_operator_was_never_told():
    a = Alerts(alert_after=3)
    a.run(T0, CRITICAL)
    a.run(T0 + 300, CRITICAL)
    assert a.run(T0 + 600, OK)[0] == []


def test_no_resolved_when_send_resolved_is_false_and_the_next_problem_alerts_again():
    a = Alerts(send_resolved=False)
    a.run(T0, CRITICAL)
    assert a.run(T0 + 300, OK)[0] == []
    assert a.run(T0 + 600, CRITICAL)[0] == [("disk:/", CRITICAL)]


def test_after_resolved_a_new_problem_alerts_again_with_a_new_start():
    a = Alerts()
    a.run(T0, CRITICAL)
    a.run(T0 + 300, OK)
    sent, alerts = a.run(T0 + 900, CRITICAL)
    assert sent == [("disk:/", CRITICAL)] and alerts[0].since == T0 + 900 and alerts[0].previous is None


def test_unknown_alerts_like_a_warning_including_its_slower_reminders():
    a = Alerts(repeat_interval=HOUR)
    assert a.run(T0, UNKNOWN)[0] == [("disk:/", UNKNOWN)]
    assert a.run(T0 + HOUR, UNKNOWN)[0] == []
    assert a.run(T0 + 6 * HOUR, UNKNOWN)[0] == [("disk:/", UNKNOWN)]
    assert a.run(T0 + 6 * HOUR + 60, OK)[0] == [("disk:/", RESOLVED)]


def test_an_alert_not_handed_over_is_offered_again_next_run():
    a = Alerts()
    assert a.run(T0, CRITICAL, told=False)[0] == [("disk:/", CRITICAL)]  # e.g. silenced
    assert a.run(T0 + 300, CRITICAL)[0] == [("disk:/", CRITICAL)]
    assert a.run(T0 + 600, CRITICAL)[0] == []


def test_a_check_removed_from_the_config_is_forgotten_without_resolved():
    a = Alerts()
    a.run(T0, result(CRITICAL, "scraper:old", "scraper"), result(OK))
    sent, _ = a.run(T0 + 300, result(OK))
    assert sent == []
    assert "scraper:old" not in a.entries
    # If it comes back later it is a new problem, told again.
    assert a.run(T0 + 600, result(CRITICAL, "scraper:old", "scraper"))[0] == [("scraper:old", CRITICAL)]


def test_checks_of_another_command_are_left_untouched():
    backups = Alerts(command="backup-check")
    backups.run(T0, result(CRITICAL, "backup:postgres", "backup"))
    stored = dict(backups.entries)
    health = Alerts()
    health.entries = stored
    sent, _ = health.run(T0 + 300, result(OK))
    assert sent == []
    assert health.entries["backup:postgres"] == stored["backup:postgres"]


def test_a_run_limited_to_some_kinds_keeps_the_state_of_the_others():
    a = Alerts()
    a.run(T0, result(CRITICAL, "vault", "vault"), result(OK))
    sent, _ = a.run(T0 + 300, result(OK), kinds_run={"system"})  # monitor health --only system
    assert sent == []
    assert a.entries["vault"]["status"] == CRITICAL
    assert a.run(T0 + 600, result(CRITICAL, "vault", "vault"), result(OK))[0] == []  # no duplicate


def test_each_check_has_its_own_state():
    a = Alerts()
    sent, _ = a.run(T0, result(CRITICAL), result(WARNING, "inodes:/"))
    assert sorted(sent) == [("disk:/", CRITICAL), ("inodes:/", WARNING)]
    sent, _ = a.run(T0 + 300, result(OK), result(WARNING, "inodes:/"))
    assert sent == [("disk:/", RESOLVED)]


def test_damaged_entries_are_treated_as_new_problems_not_errors():
    alerts, entries = alert_state.evaluate({"disk:/": "garbage", "x": 5}, [result(CRITICAL)], "health",
                                           None, T0, 1, HOUR, True)
    assert [(a.check_id, a.status) for a in alerts] == [("disk:/", CRITICAL)]
    alerts, _ = alert_state.evaluate({"disk:/": {"status": "critical", "since": "yesterday",
                                                  "notified_status": "critical", "notified_at": None}},
                                     [result(CRITICAL)], "health", None, T0, 1, HOUR, True)
    # Told already, but when is unreadable: a reminder now beats never reminding again.
    assert [(a.check_id, a.reminder) for a in alerts] == [("disk:/", True)]


# --- flapping (alerts.flap_window) ------------------------------------------------------------

def every_5_minutes(a, start_minute, *statuses, **kwargs):
    """Runs 5 minutes apart from T0 + start_minute; return what each sent."""
    return [a.run(T0 + (start_minute + 5 * i) * MINUTE, s, **kwargs)[0] for i, s in enumerate(statuses)]


def flapping_by_minute_30():
    """Critical/ok every 5 minutes: the 3rd resolve→fire (minute 30) is sent as FLAPPING."""
    a = Alerts()
    sent = every_5_minutes(a, 0, CRITICAL, OK, CRITICAL, OK, CRITICAL, OK)
    last, alerts = a.run(T0 + 30 * MINUTE, CRITICAL)
    return a, sent + [last], alerts


def test_the_third_resolve_then_fire_within_the_window_is_sent_once_as_flapping():
    a, sent, (alert,) = flapping_by_minute_30()
    disk = lambda status: [("disk:/", status)]  # noqa: E731
    assert sent == [disk(CRITICAL), disk(RESOLVED)] * 3 + [disk(FLAPPING)]
    assert (alert.changes, alert.since, alert.duration, alert.flap_window) == (7, T0, 30 * MINUTE, 15 * MINUTE)
    assert a.entries["disk:/"]["flapping"] == T0 + 30 * MINUTE
    # While it flaps on: nothing, neither fire nor RESOLVED nor severity change nor reminder.
    assert every_5_minutes(a, 35, OK, CRITICAL, WARNING, OK, CRITICAL, OK, WARNING) == [[]] * 7


def test_a_flapping_check_ok_for_a_whole_window_is_resolved_once_for_the_whole_episode():
    a, _, _ = flapping_by_minute_30()
    assert every_5_minutes(a, 35, OK, OK) == [[], []]  # ok since minute 35: 10 minutes only
    sent, alerts = a.run(T0 + 50 * MINUTE, OK)  # 15 minutes
    assert sent == [("disk:/", RESOLVED)]
    assert alerts[0].previous == FLAPPING and alerts[0].since == T0 and alerts[0].duration == 35 * MINUTE
    assert "flapping" not in a.entries["disk:/"]
    assert every_5_minutes(a, 55, OK, OK) == [[], []]
    # Back to normal: the next problem is alerted at once, as a new problem.
    assert a.run(T0 + 70 * MINUTE, CRITICAL)[0] == [("disk:/", CRITICAL)]


def test_a_flapping_check_that_turns_critical_and_stays_so_is_alerted_one_window_later():
    a = Alerts()
    every_5_minutes(a, 0, WARNING, OK, WARNING, OK, WARNING, OK)
    assert a.run(T0 + 30 * MINUTE, WARNING)[0] == [("disk:/", FLAPPING)]
    # Critical from minute 40: held while it might still be flapping, never lost.
    assert every_5_minutes(a, 35, OK, CRITICAL, CRITICAL, CRITICAL) == [[]] * 4
    sent, alerts = a.run(T0 + 55 * MINUTE, CRITICAL)  # critical for a whole window
    assert sent == [("disk:/", CRITICAL)]
    assert alerts[0].previous == FLAPPING and alerts[0].since == T0 + 40 * MINUTE and not alerts[0].reminder
    # Then the usual life of a critical: reminders, RESOLVED.
    assert a.run(T0 + 60 * MINUTE, CRITICAL)[0] == []
    assert a.run(T0 + 55 * MINUTE + HOUR, CRITICAL)[0] == [("disk:/", CRITICAL)]
    assert a.run(T0 + 2 * HOUR, OK)[0] == [("disk:/", RESOLVED)]


def test_a_severity_change_without_an_ok_run_between_does_not_end_the_quiet_window_early():
    a, _, _ = flapping_by_minute_30()  # critical at minute 30
    assert every_5_minutes(a, 35, WARNING, CRITICAL) == [[], []]  # still failing: no state change
    sent, alerts = a.run(T0 + 45 * MINUTE, WARNING)  # failing for a whole window since minute 30
    assert sent == [("disk:/", WARNING)] and alerts[0].previous == FLAPPING


def test_changes_a_whole_window_apart_are_not_flapping():
    a = Alerts()
    sent = every_5_minutes(a, 0, CRITICAL, OK, OK, OK, CRITICAL, OK, OK, OK, CRITICAL, OK, OK, OK, CRITICAL)
    assert [s for s in sent if s] == [[("disk:/", CRITICAL)], [("disk:/", RESOLVED)]] * 3 + [[("disk:/", CRITICAL)]]


def test_a_problem_that_lasted_a_whole_window_starts_the_count_again():
    a = Alerts()
    every_5_minutes(a, 0, CRITICAL, OK, CRITICAL, CRITICAL, CRITICAL, CRITICAL)  # critical minutes 10-25
    sent = every_5_minutes(a, 30, OK, CRITICAL, OK, CRITICAL)
    assert sent == [[("disk:/", RESOLVED)], [("disk:/", CRITICAL)]] * 2  # 2 cycles since: not yet
    assert every_5_minutes(a, 50, OK, CRITICAL) == [[("disk:/", RESOLVED)], [("disk:/", FLAPPING)]]


def test_single_failing_runs_below_alert_after_are_not_state_changes():
    a = Alerts(alert_after=2)
    assert every_5_minutes(a, 0, *[CRITICAL, OK] * 8) == [[]] * 16
    assert "flapping" not in a.entries["disk:/"]


def test_with_alert_after_2_flapping_counts_the_fires():
    a = Alerts(alert_after=2)
    sent = every_5_minutes(a, 0, *[CRITICAL, CRITICAL, OK] * 4)
    assert [s for s in sent if s] == [[("disk:/", CRITICAL)], [("disk:/", RESOLVED)]] * 3 + [[("disk:/", FLAPPING)]]


def test_a_flap_window_of_zero_turns_flap_detection_off():
    a = Alerts(flap_window=0)
    sent = every_5_minutes(a, 0, *[CRITICAL, OK] * 5)
    assert sent == [[("disk:/", CRITICAL)], [("disk:/", RESOLVED)]] * 5
    assert set(a.entries["disk:/"]) == {"command", "kind", "status", "notified_status", "notified_at", "since",
                                        "count", "began"}


def test_turning_flap_detection_off_while_flapping_alerts_as_usual_again():
    a, _, _ = flapping_by_minute_30()
    a.rules = a.rules[:3] + (0,)
    sent, alerts = a.run(T0 + 35 * MINUTE, OK)
    assert sent == [("disk:/", RESOLVED)] and alerts[0].previous == FLAPPING


def test_a_flapping_alert_held_back_by_a_silence_is_offered_until_told_then_never_again():
    a = Alerts()
    every_5_minutes(a, 0, CRITICAL, OK, CRITICAL, OK, CRITICAL, OK)
    assert a.run(T0 + 30 * MINUTE, CRITICAL, told=False)[0] == [("disk:/", FLAPPING)]  # silenced
    assert a.run(T0 + 35 * MINUTE, OK, told=False)[0] == [("disk:/", FLAPPING)]
    assert a.run(T0 + 40 * MINUTE, CRITICAL)[0] == [("disk:/", FLAPPING)]
    assert every_5_minutes(a, 45, OK, CRITICAL) == [[], []]


def test_a_clock_gone_back_while_flapping_holds_alerts_for_one_window_not_until_it_catches_up():
    a, _, _ = flapping_by_minute_30()
    back = T0 - 10 * HOUR  # the state folder was restored on a host whose clock is behind
    assert a.run(back, CRITICAL)[0] == []
    assert a.run(back + 10 * MINUTE, CRITICAL)[0] == []
    assert a.run(back + 15 * MINUTE, CRITICAL)[0] == [("disk:/", CRITICAL)]


def test_an_alert_state_written_before_flap_detection_loads_and_goes_on():
    # alerts.json entries as the previous release wrote them: no flapping fields.
    old = {"disk:/": {"command": "health", "kind": "system", "status": "critical", "notified_status": "critical",
                      "notified_at": T0, "since": T0, "count": 3},
           "inodes:/": {"command": "health", "kind": "system", "status": "ok", "notified_status": None,
                        "notified_at": T0 - HOUR, "since": T0 - HOUR, "count": 0, "began": T0 - 2 * HOUR}}
    a = Alerts()
    a.entries = old
    assert a.run(T0 + 5 * MINUTE, result(CRITICAL), result(OK, "inodes:/"))[0] == []
    sent, alerts = a.run(T0 + 10 * MINUTE, result(OK), result(OK, "inodes:/"))
    assert sent == [("disk:/", RESOLVED)] and alerts[0].duration == 10 * MINUTE
    # and it takes part in flap detection from there
    sent = every_5_minutes(a, 15, CRITICAL, OK, CRITICAL, OK, CRITICAL)
    assert sent[-1] == [("disk:/", FLAPPING)]


def test_the_flapping_message_rings_and_names_the_changes_and_the_window():
    _, _, (flapping,) = flapping_by_minute_30()
    critical = Alerts().run(T0, result(CRITICAL, "vault", "vault", "unreachable"))[1][0]
    text = messages.compose([flapping, critical], "vps-1", "prod", T0 + 30 * MINUTE)
    plain = html_to_plain(text)
    assert plain.index("🚨 CRITICAL") < plain.index("🔁 FLAPPING · vps-1 (prod)")
    assert "disk:/ — disk 97% > 95%" in plain
    assert "changed state 7 times in 30m, now critical: Disk / 97% used" in plain
    assert "no more alerts until it stays ok or failing for 15m" in plain
    assert messages.rings([flapping])


def _age_alert_state(state, seconds: float) -> None:
    """Move every time in alerts.json `seconds` into the past: as if the runs were that much older."""
    path = state / "alerts.json"
    data = json.loads(path.read_text())
    for entry in data["checks"].values():
        for key in ("since", "notified_at", "began", "changed_at", "chain_since", "flapping"):
            if isinstance(entry.get(key), (int, float)):
                entry[key] -= seconds
    path.write_text(json.dumps(data))


def test_flapping_end_to_end_one_flapping_message_then_quiet_then_the_critical_that_stayed(tmp_path):
    with TelegramStandIn() as telegram:
        install = Install(tmp_path, telegram)
        install.scrapers = ["feed"]   # critical while its heartbeat file is missing, ok when fresh
        install.alerts = 'flap_window = "1h"'
        # The alerts' flap detection is under test: the scraper's own success rate (which
        # rightly calls a scraper failing every other run critical) is put out of reach.
        install.extra = "[scrapers.success_rate]\nwarning = 0\ncritical = 0\n"
        heartbeat = tmp_path / "heartbeats" / "feed"
        heartbeat.parent.mkdir()

        def run(status):
            if status == OK:
                heartbeat.touch()
            else:
                heartbeat.unlink(missing_ok=True)
            done = install.health("--only", "scraper")
            assert done.code == (0 if status == OK else 2), done
            return done.data["notifications"]["sent"]

        assert [run(s) for s in (CRITICAL, OK) * 3] == [1] * 6
        assert run(CRITICAL) == 1
        flapping = telegram.delivered[-1]
        plain = html_to_plain(flapping.text)
        assert plain.startswith("🔁 FLAPPING") and "scraper:feed" in plain and "changed state 7 times" in plain
        assert "no more alerts until it stays ok or failing for 1h" in plain
        assert flapping.disable_notification is False  # it rings
        assert json.loads((install.state / "alerts.json").read_text())["checks"]["scraper:feed"]["notified_status"] \
            == FLAPPING

        assert [run(s) for s in (OK, CRITICAL, OK, CRITICAL)] == [0] * 4  # flapping on: quiet
        assert len(telegram.delivered) == 7

        _age_alert_state(install.state, 3600)  # critical since the last run, an hour ago
        assert run(CRITICAL) == 1
        plain = html_to_plain(telegram.delivered[-1].text)
        assert plain.startswith("🚨 CRITICAL") and "scraper:feed" in plain and "(was flapping)" in plain
        entry = json.loads((install.state / "alerts.json").read_text())["checks"]["scraper:feed"]
        assert "flapping" not in entry and entry["notified_status"] == CRITICAL
        assert run(CRITICAL) == 0
        assert len(telegram.received) == 8 and install.leaks() == []
