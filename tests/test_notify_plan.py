"""notify()'s pure half, with plain data: no server, no files, no clock (monitor/alerts/plan.py).

`tell` decides what a run tells (after silences) and in which message; `hold` decides
what the outbox holds before delivery and which alerts count as told. A run here is
tell then hold, with the alert state carried from one run to the next as notify()
saves it, whatever Telegram then does with the outbox.
"""

import copy
import itertools

from monitor.alerts import plan
from monitor.alerts.state import FLAPPING, RESOLVED
from monitor.alerts.telegram import LIMIT, html_to_plain
from monitor.results import CRITICAL, OK, WARNING, Result

T0 = 1_800_000_000.0
MINUTE = 60.0
HOUR = 3600.0
CHAT, OTHER = "-100123", "-100456"


def config(chat_ids=(CHAT,), telegram=True, alert_after=1, flap_window=15 * MINUTE, send_resolved=True,
           max_age=24 * HOUR):
    cfg = {"environment": "prod",
           "alerts": {"alert_after": alert_after, "repeat_interval": HOUR, "send_resolved": send_resolved,
                      "flap_window": flap_window}}
    if telegram:
        cfg["telegram"] = {"chat_ids": list(chat_ids), "outbox_max_age": max_age}
    return cfg


def result(status, check_id="disk:/", message=None):
    return Result(status, message or f"Disk / {status}", value=97.0 if status != OK else 50.0, unit="%",
                  warning=90, critical=95, id=check_id, kind="system")


def waiting(text, created, chat=CHAT, alerts=(), message_id="old"):
    return {"id": message_id, "chat_id": chat, "text": text, "disable_notification": False, "created": created,
            "not_before": None, "attempts": 1, "last_error": "connection refused", "alerts": list(alerts)}


class Runs:
    """Runs of one command, tell then hold, keeping the entries notify() would save."""

    def __init__(self, cfg=None, command="health"):
        self.cfg = cfg or config()
        self.command, self.entries, self.ids = command, {}, (f"m{n}" for n in itertools.count())

    def run(self, now, *results, silences=(), outbox=(), message=None, no_notify=False, migrations=None):
        told = plan.tell(self.cfg, self.command, list(results), None, "vps-1", self.entries, list(silences), now,
                         message)
        held = plan.hold(told, self.cfg, list(outbox), migrations or {}, now, no_notify,
                         new_id=lambda: next(self.ids))
        self.entries = held.entries
        return told, held


def told_about(told):
    return [(a.check_id, a.status) for a in told.alerts]


# --- told once ----------------------------------------------------------------------------------

def test_an_alert_is_told_once_when_it_joins_the_outbox_even_without_delivery():
    runs = Runs()
    told, held = runs.run(T0, result(CRITICAL))
    assert told_about(told) == [("disk:/", CRITICAL)]
    assert held.deliver and [m["chat_id"] for m in held.outbox] == [CHAT]
    assert held.outbox[0]["alerts"] == [["disk:/", CRITICAL]] and held.fresh == {"m0"}
    assert held.entries["disk:/"]["notified_status"] == CRITICAL
    for minutes in (5, 10, 30):  # the outbox holds it: no second copy, whatever delivery did
        told, held = runs.run(T0 + minutes * MINUTE, result(CRITICAL))
        assert told.alerts == [] and told.text is None and held.outbox == []


def test_every_chat_gets_the_same_message_in_its_own_outbox_item():
    told, held = Runs(config(chat_ids=(CHAT, OTHER))).run(T0, result(CRITICAL))
    assert [m["chat_id"] for m in held.outbox] == [CHAT, OTHER]
    assert held.outbox[0]["text"] == held.outbox[1]["text"] == told.text
    assert held.outbox[0]["disable_notification"] is False  # a critical rings


def test_the_plan_changes_none_of_its_inputs():
    runs = Runs()
    runs.run(T0, result(CRITICAL))
    entries, outbox = copy.deepcopy(runs.entries), [waiting("older", T0)]
    before = (copy.deepcopy(entries), copy.deepcopy(outbox))
    told = plan.tell(runs.cfg, "health", [result(OK)], None, "vps-1", entries, [], T0 + HOUR)
    plan.hold(told, runs.cfg, outbox, {}, T0 + HOUR)
    assert (entries, outbox) == before


def test_a_resolved_problem_is_told_once_with_how_long_it_lasted():
    runs = Runs()
    runs.run(T0, result(CRITICAL))
    told, held = runs.run(T0 + 2 * HOUR, result(OK))
    assert told_about(told) == [("disk:/", RESOLVED)] and told.alerts[0].duration == 2 * HOUR
    assert "✅ RESOLVED" in told.text and "ok again after 2h" in html_to_plain(told.text)
    assert held.outbox[0]["disable_notification"] is True  # a RESOLVED alone does not ring
    assert runs.run(T0 + 3 * HOUR, result(OK))[0].alerts == []


def test_without_send_resolved_the_end_of_a_problem_is_not_told():
    runs = Runs(config(send_resolved=False))
    runs.run(T0, result(CRITICAL))
    told, held = runs.run(T0 + HOUR, result(OK))
    assert told.alerts == [] and held.outbox == []


# --- silences, dry runs, --no-notify, no Telegram -------------------------------------------------

def test_a_silenced_alert_is_evaluated_and_listed_but_not_sent_nor_marked_told():
    silence = {"id": "s1", "pattern": "disk:*", "until": T0 + HOUR, "reason": "resize"}
    runs = Runs()
    told, held = runs.run(T0, result(CRITICAL), result(WARNING, "memory"), silences=[silence])
    assert [(a.check_id, s["id"]) for a, s in told.silenced] == [("disk:/", "s1")]
    assert told_about(told) == [("memory", WARNING)] and "disk:/" not in told.text
    assert runs.entries["disk:/"]["notified_status"] is None
    told, _ = runs.run(T0 + HOUR + 1, result(CRITICAL), result(WARNING, "memory"))  # the silence ended
    assert told_about(told) == [("disk:/", CRITICAL)]


def test_a_dry_run_previews_the_message_for_every_chat_or_for_none_without_telegram():
    cfg = config(chat_ids=(CHAT, OTHER))
    told = plan.tell(cfg, "health", [result(CRITICAL)], None, "vps-1", {}, [], T0)
    assert told.previews == [{"chat_id": CHAT, "text": told.text}, {"chat_id": OTHER, "text": told.text}]
    for cfg in (config(telegram=False), config(chat_ids=())):
        told = plan.tell(cfg, "health", [result(CRITICAL)], None, "vps-1", {}, [], T0)
        assert told.previews == [{"chat_id": None, "text": told.text}]
    assert plan.tell(cfg, "health", [result(OK)], None, "vps-1", {}, [], T0).previews == []


def test_under_no_notify_what_waits_is_kept_as_is_and_the_alert_is_told_by_a_later_run():
    old = waiting("older", T0 - 48 * HOUR)  # past outbox_max_age, but not expired by a run that sends nothing
    runs = Runs()
    told, held = runs.run(T0, result(CRITICAL), outbox=[old], no_notify=True)
    assert told_about(told) == [("disk:/", CRITICAL)]
    assert (held.outbox, held.dropped, held.deliver, held.save_outbox, held.off) == ([old], [], False, False, None)
    assert runs.entries["disk:/"]["notified_status"] is None
    assert told_about(runs.run(T0 + MINUTE, result(CRITICAL))[0]) == [("disk:/", CRITICAL)]


def test_without_a_telegram_section_or_chat_notifications_are_off_and_nothing_is_marked_told():
    held = Runs(config(telegram=False)).run(T0, result(CRITICAL))[1]
    assert (held.deliver, held.save_outbox, held.off) == (False, False, "no [telegram] section")
    assert held.entries["disk:/"]["notified_status"] is None
    old = waiting("older", T0)
    held = Runs(config(chat_ids=())).run(T0, result(CRITICAL), outbox=[old])[1]
    assert (held.outbox, held.deliver, held.save_outbox) == ([old], False, True)
    assert held.off == "telegram.chat_ids is empty"


# --- the outbox -----------------------------------------------------------------------------------

def test_this_runs_message_queues_behind_what_waits_and_what_waited_too_long_is_dropped():
    old = waiting("too old", T0 - 25 * HOUR, message_id="old")
    recent = waiting("recent", T0 - HOUR, message_id="recent")
    told, held = Runs().run(T0, result(CRITICAL), outbox=[old, recent])
    assert [m["id"] for m in held.outbox] == ["recent", "m0"] and held.dropped == [old]
    assert held.fresh == {"m0"} and held.deliver  # delivered, or kept for a run with a bot token


def test_a_chat_telegram_moved_gets_this_runs_message_at_its_new_id():
    held = Runs().run(T0, result(CRITICAL), migrations={CHAT: "-1009876543210"})[1]
    assert [m["chat_id"] for m in held.outbox] == ["-1009876543210"]


def test_delivery_puts_alerts_before_info_and_reports_oldest_first_within_each():
    queue = [waiting("report 1", T0, message_id="r1"), waiting("alert 1", T0, alerts=[["a", CRITICAL]],
                                                                message_id="a1"),
             waiting("report 2", T0, message_id="r2"), waiting("alert 2", T0, alerts=[["b", RESOLVED]],
                                                                message_id="a2")]
    assert [m["id"] for m in plan.delivery_order(queue)] == ["a1", "a2", "r1", "r2"]


# --- flapping -------------------------------------------------------------------------------------

def test_a_flapping_check_is_told_once_as_flapping_then_not_until_it_settles():
    runs = Runs(config(flap_window=15 * MINUTE))
    told = []
    for n, status in enumerate([CRITICAL, OK] * 4):
        told.append(told_about(runs.run(T0 + n * MINUTE, result(status))[0]))
    assert told[:6] == [[("disk:/", CRITICAL)], [("disk:/", RESOLVED)]] * 3
    assert told[6] == [("disk:/", FLAPPING)] and told[7] == []
    assert runs.run(T0 + 8 * MINUTE, result(CRITICAL))[0].alerts == []  # still flapping: quiet
    settled = runs.run(T0 + 8 * MINUTE + 15 * MINUTE, result(CRITICAL))[0]  # failing for a whole window
    assert told_about(settled) == [("disk:/", CRITICAL)]


# --- the command's own text (the daily report) ----------------------------------------------------

def test_the_report_opens_the_message_and_the_alerts_follow_it():
    told, held = Runs(command="daily-report").run(T0, result(CRITICAL), message=("<b>Daily report</b>", True))
    assert told.text.startswith("<b>Daily report</b>\n\n") and "🚨 CRITICAL" in told.text
    assert len(held.outbox) == 1 and held.outbox[0]["disable_notification"] is False  # the alert rings


def test_a_silent_report_alone_stays_silent():
    told, held = Runs(command="daily-report").run(T0, result(OK), message=("<b>Daily report</b>", True))
    assert told.text == "<b>Daily report</b>" and told.alerts == []
    assert held.outbox[0]["disable_notification"] is True and held.outbox[0]["alerts"] == []


def test_alerts_the_report_itself_shows_are_not_repeated_under_it_but_are_told():
    runs = Runs(command="daily-report")
    told, held = runs.run(T0, result(WARNING, "backup:db"), message=("report says backup:db is old", True,
                                                                      ["backup:db"]))
    assert told.text == "report says backup:db is old" and told_about(told) == [("backup:db", WARNING)]
    assert held.entries["backup:db"]["notified_status"] == WARNING  # told by the report
    assert held.outbox[0]["disable_notification"] is False  # its alert still rings
    told, _ = runs.run(T0 + HOUR, result(OK, "backup:db"), message=("report: all fine", True, ["backup:db"]))
    assert "✅ RESOLVED" in told.text  # a RESOLVED is listed even for a check the report shows


def test_a_report_too_long_for_one_message_goes_after_its_alerts_in_pieces_of_its_own():
    report = "\n".join(f"line {n} " + "x" * 90 for n in range(80))  # about 8000 characters
    told, held = Runs(command="daily-report").run(T0, result(CRITICAL), message=(report, True))
    pieces = held.outbox
    assert len(pieces) >= 3 and all(len(m["text"]) <= LIMIT for m in pieces)
    assert "🚨 CRITICAL" in pieces[0]["text"] and pieces[0]["alerts"] == [["disk:/", CRITICAL]]
    assert pieces[0]["disable_notification"] is False
    assert all(m["alerts"] == [] and m["disable_notification"] is True for m in pieces[1:])
    assert "\n".join(m["text"] for m in pieces[1:]) == report
