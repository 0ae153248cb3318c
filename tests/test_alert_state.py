"""Alert transitions, judged with explicit clocks: when the operator hears about a problem,
is reminded of it, and is told it is over (SPEC: Alerts, [alerts])."""

from monitor import alert_state
from monitor.alert_state import RESOLVED
from monitor.results import CRITICAL, OK, UNKNOWN, WARNING, Result

T0 = 1_800_000_000.0
HOUR = 3600.0


def result(status, check_id="disk:/", kind="system", message="Disk / 97% used"):
    return Result(status, message, value=97.0, unit="%", warning=90, critical=95, id=check_id, kind=kind)


class Alerts:
    """Feed runs one at a time, as cron would, keeping the entries between them.

    Like notify.py, an alert counts as told once it was handed over for delivery.
    """

    def __init__(self, alert_after=1, repeat_interval=HOUR, send_resolved=True, command="health"):
        self.entries = {}
        self.rules = (alert_after, repeat_interval, send_resolved)
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
