"""Alertmanager as an alert sink (monitor/alerts/alertmanager.py): what each run posts,
decided from plain data, and the posting itself against loopback HTTP replicas."""

import json
import os
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from monitor import config as monitor_config
from monitor.alerts import alertmanager
from monitor.checks import MODULES
from monitor.results import CRITICAL, OK, WARNING, Result, with_identity
from tests.conftest import VERDICT_CONFIGS

NOW = 1_800_000_000.0
PERIOD = 300.0


def result(check_id, status, kind="system", message="disk / 96% used", value=96.0):
    return with_identity(Result(status, message, value=value, unit="%", warning=90, critical=95),
                         check_id, kind, 1.0)


def entry(status, count=1, since=NOW - 600, **extra):
    return {"command": "health", "kind": "system", "status": status, "count": count, "since": since, **extra}


def plan(stored, results, entries, command="health", kinds_run=None, alert_after=1, now=NOW):
    return alertmanager.plan(stored, results, entries, command, kinds_run, "vps-1", "prod", alert_after, now,
                             PERIOD)


def ts(text):
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def test_a_critical_check_is_posted_with_its_labels_annotations_and_times():
    posts, state, _ = plan({}, [result("disk:/", CRITICAL)], {"disk:/": entry(CRITICAL)})
    assert len(posts) == 1
    alert = posts[0]
    assert alert["labels"] == {"alertname": "MonitorSystemDisk", "check": "disk:/", "instance": "vps-1",
                               "environment": "prod", "severity": "critical", "command": "health"}
    assert alert["annotations"]["summary"] == "disk:/ critical — disk 96% > 95%"
    assert alert["annotations"]["description"] == "disk / 96% used"
    assert alert["annotations"]["runbook"] == "ssh vps-1 monitor health --only system --format text"
    assert ts(alert["startsAt"]) == pytest.approx(NOW - 600, abs=0.01)  # when the problem began
    assert ts(alert["endsAt"]) == pytest.approx(NOW + 3 * PERIOD, abs=0.01)  # a late run does not resolve it
    assert set(state["firing"]) == {"disk:/"} and state["resolved"] == []


def test_below_alert_after_nothing_is_posted():
    posts, state, _ = plan({}, [result("disk:/", CRITICAL)], {"disk:/": entry(CRITICAL, count=1)}, alert_after=3)
    assert posts == [] and state == {"firing": {}, "resolved": []}


def test_an_unknown_check_posts_as_a_warning_that_could_not_check():
    posts, _, _ = plan({}, [result("vault", "unknown", kind="vault", message="timed out", value=None)],
                       {"vault": entry("unknown")})
    assert posts[0]["labels"]["severity"] == WARNING
    assert posts[0]["annotations"]["summary"] == "vault could not check"


def test_ok_again_posts_a_resolution_ending_now_and_keeps_it_until_accepted():
    _, state, _ = plan({}, [result("disk:/", CRITICAL)], {"disk:/": entry(CRITICAL)})
    posts, state, _ = plan(state, [result("disk:/", OK)], {"disk:/": entry(OK, count=0)}, now=NOW + 300)
    assert len(posts) == 1 and ts(posts[0]["endsAt"]) == pytest.approx(NOW + 300, abs=0.01)
    assert posts[0]["labels"]["check"] == "disk:/" and state["firing"] == {}
    # Not accepted: the next run sends it again, still ending when the check was ok.
    posts, state, _ = plan(state, [result("disk:/", OK)], {"disk:/": entry(OK, count=0)}, now=NOW + 600)
    assert len(posts) == 1 and ts(posts[0]["endsAt"]) == pytest.approx(NOW + 300, abs=0.01)
    assert "resolvedAt" not in alertmanager.wire(posts[0])


def test_a_check_failing_again_before_its_resolution_went_out_is_simply_firing():
    _, state, _ = plan({}, [result("disk:/", CRITICAL)], {"disk:/": entry(CRITICAL)})
    _, state, _ = plan(state, [result("disk:/", OK)], {"disk:/": entry(OK, count=0)}, now=NOW + 300)
    posts, state, _ = plan(state, [result("disk:/", CRITICAL)], {"disk:/": entry(CRITICAL, since=NOW + 600)},
                           now=NOW + 600)
    assert [ts(p["endsAt"]) > NOW + 600 for p in posts] == [True] and state["resolved"] == []


def test_a_severity_change_resolves_the_old_alert_and_fires_the_new_one():
    _, state, _ = plan({}, [result("disk:/", WARNING)], {"disk:/": entry(WARNING)})
    posts, state, _ = plan(state, [result("disk:/", CRITICAL)], {"disk:/": entry(CRITICAL)}, now=NOW + 300)
    by_severity = {p["labels"]["severity"]: ts(p["endsAt"]) for p in posts}
    assert by_severity == {"warning": pytest.approx(NOW + 300, abs=0.01),
                           "critical": pytest.approx(NOW + 300 + 3 * PERIOD, abs=0.01)}


def test_a_silenced_check_is_still_posted_firing_so_alertmanager_never_ends_it_on_its_own():
    """Not posting it let Alertmanager end the alert at endsAt: a false RESOLVED, then a new page."""
    _, state, _ = plan({}, [result("disk:/", CRITICAL)], {"disk:/": entry(CRITICAL)})
    posts, state, _ = plan(state, [result("disk:/", CRITICAL)], {"disk:/": entry(CRITICAL)}, now=NOW + 300)
    assert [ts(p["endsAt"]) for p in posts] == [pytest.approx(NOW + 300 + 3 * PERIOD, abs=0.01)]
    posts, state, _ = plan(state, [result("disk:/", OK)], {"disk:/": entry(OK, count=0)}, now=NOW + 600)
    assert len(posts) == 1 and ts(posts[0]["endsAt"]) == pytest.approx(NOW + 600, abs=0.01)


# --- silences and acks relayed as Alertmanager silences (plain data) ---------------------------

def relays(stored, silences=(), entries=None, firing=None, now=NOW):
    return alertmanager.plan_relays(stored, list(silences), entries or {}, firing or {}, "vps-1", now,
                                    lambda command: PERIOD, "prod")


def firing_disk(status=CRITICAL):
    _, state, _ = plan({}, [result("disk:/", status)], {"disk:/": entry(status)})
    return state["firing"]


SILENCE = {"id": "a1b2", "pattern": "disk:*", "until": NOW + 3600, "reason": "resizing", "created": NOW,
           "author": "@alice"}


def test_a_monitor_silence_becomes_an_alertmanager_silence_on_this_instance_and_the_checks_it_matches():
    kept, requests = relays({}, [SILENCE])
    (request,) = requests
    assert (request["method"], request["path"]) == ("POST", "/api/v2/silences")
    body = request["body"]
    # monitor's alerts of this environment and instance alone: a node_exporter NodeDown with the
    # same instance, or another environment's alerts, are not silenced by a `/mute *`
    assert body["matchers"] == [{"name": "alertname", "value": "Monitor.+", "isRegex": True, "isEqual": True},
                                {"name": "environment", "value": "prod", "isRegex": False, "isEqual": True},
                                {"name": "instance", "value": "vps-1", "isRegex": False, "isEqual": True},
                                {"name": "check", "value": "(?s:disk:.*)", "isRegex": True, "isEqual": True}]
    assert ts(body["startsAt"]) == pytest.approx(NOW) and ts(body["endsAt"]) == pytest.approx(NOW + 3600)
    assert body["createdBy"] == "@alice" and body["comment"] == "resizing (monitor silence a1b2)" and "id" not in body
    assert kept["silence:a1b2"]["id"] is None  # not taken yet
    # Taken: the next run has nothing to say about it.
    taken = alertmanager.settle(kept, requests, {"silence:a1b2": {"ok": True, "id": "am-1", "startsAt": "x"}})
    assert taken["silence:a1b2"]["id"] == "am-1"
    again, requests = relays(taken, [SILENCE], now=NOW + 300)
    assert requests == [] and again == taken
    no_author, _ = relays({}, [{**SILENCE, "author": None, "reason": ""}])
    assert (no_author["silence:a1b2"]["createdBy"], no_author["silence:a1b2"]["comment"]) == \
        ("monitor", "(monitor silence a1b2)")


def test_a_silence_no_replica_took_is_asked_again_and_one_removed_early_is_expired_until_a_replica_did():
    kept, requests = relays({}, [SILENCE])
    kept = alertmanager.settle(kept, requests, {"silence:a1b2": {"ok": False}})
    kept, requests = relays(kept, [SILENCE], now=NOW + 300)
    assert [r["method"] for r in requests] == ["POST"]  # asked again
    kept = alertmanager.settle(kept, requests, {"silence:a1b2": {"ok": True, "id": "am-1"}})
    # Removed (silence remove, /unmute) before its end: expired in Alertmanager.
    kept, requests = relays(kept, [], now=NOW + 600)
    assert [(r["method"], r["path"]) for r in requests] == [("DELETE", "/api/v2/silence/am-1")]
    kept = alertmanager.settle(kept, requests, {"silence:a1b2": {"ok": False}})
    assert kept["silence:a1b2"]["expire"] is True
    kept, requests = relays(kept, [], now=NOW + 900)
    assert [r["method"] for r in requests] == ["DELETE"]  # still to expire
    assert alertmanager.settle(kept, requests, {"silence:a1b2": {"gone": True}}) == {}  # no replica knows it
    # Over on its own: Alertmanager ended it too; nothing to send.
    assert relays({"silence:a1b2": {"id": "am-1", "until": NOW - 1}}, []) == ({}, [])


def test_an_ack_becomes_a_silence_of_that_alert_at_its_severity_renewed_each_run_and_expired_when_it_lapses():
    firing = firing_disk()
    acked = {"disk:/": entry(CRITICAL, ack={"by": "@bob", "at": NOW, "status": CRITICAL})}
    kept, (request,) = relays({}, entries=acked, firing=firing)
    body = request["body"]
    assert {m["name"]: (m["value"], m["isRegex"]) for m in body["matchers"]} == {
        "alertname": ("MonitorSystemDisk", False), "check": ("disk:/", False), "command": ("health", False),
        "environment": ("prod", False), "instance": ("vps-1", False), "severity": ("critical", False)}
    assert ts(body["endsAt"]) == pytest.approx(NOW + 3 * PERIOD) and body["createdBy"] == "@bob"
    kept = alertmanager.settle(kept, [request], {"ack:disk:/": {"ok": True, "id": "am-7",
                                                                "startsAt": "2027-01-15T08:00:00.1Z"}})
    # The next run renews it: the same id and start (an update in place), a later end.
    kept, (request,) = relays(kept, entries=acked, firing=firing, now=NOW + 300)
    assert (request["body"]["id"], request["body"]["startsAt"]) == ("am-7", "2027-01-15T08:00:00.1Z")
    assert ts(request["body"]["endsAt"]) == pytest.approx(NOW + 300 + 3 * PERIOD)
    kept = alertmanager.settle(kept, [request], {"ack:disk:/": {"ok": True, "id": "am-7"}})
    # Warning -> critical: the ack lapsed (alert_state drops it), so does the silence.
    _, requests = relays(kept, entries={"disk:/": entry(WARNING)}, firing=firing_disk(WARNING), now=NOW + 600)
    assert [(r["method"], r["path"]) for r in requests] == [("DELETE", "/api/v2/silence/am-7")]
    # Resolved: the alert is no longer firing.
    _, requests = relays(kept, entries={"disk:/": entry(OK, count=0)}, firing={}, now=NOW + 600)
    assert [r["method"] for r in requests] == ["DELETE"]


def test_an_ack_of_a_severity_alertmanager_does_not_have_is_not_relayed():
    stale = {"disk:/": entry(CRITICAL, ack={"by": "@bob", "at": NOW, "status": WARNING})}
    assert relays({}, entries=stale, firing=firing_disk()) == ({}, [])
    unknown = {"vault": {**entry("unknown"), "ack": {"by": "@bob", "at": NOW, "status": "unknown"}}}
    _, state, _ = plan({}, [result("vault", "unknown", kind="vault", value=None)], unknown)
    _, (request,) = relays({}, entries=unknown, firing=state["firing"])
    assert {"name": "severity", "value": "warning", "isRegex": False, "isEqual": True} in request["body"]["matchers"]


@pytest.mark.parametrize("pattern", ["disk:*", "scraper:a?c", "x[!ab]y", "[a-z]*", "a.b|c(d)", "[]]x", "[z-a]",
                                     "q[", "é*", "a\\b", "[a-]", "[z-ab]", "*[0-9]", "+{1}$^", "[[]"])
def test_a_glob_becomes_the_regex_that_matches_the_same_check_ids(pattern):
    import fnmatch
    import re

    ids = ["disk:/", "disk:/var", "scraper:abc", "scraper:axc", "xay", "xcy", "a.b|c(d)", "]x", "z", "a",
           "q[", "éx", "a\\b", "-", "b", "x9", "+{1}$^", "[", "", "aXb", "disk:/a\nb", "scraper:a\nc", "x\ny",
           "\n"]
    regex = alertmanager.glob_regex(pattern)
    assert [i for i in ids if re.fullmatch(regex, i)] == [i for i in ids if fnmatch.fnmatchcase(i, pattern)]


def test_a_silence_saved_for_ever_is_relayed_for_a_year_held_and_a_damaged_one_costs_only_itself(
        monitor_records):
    """Older versions saved `/mute x 99999999999999d` (until 1e12, the year 33658): `iso` could not
    write it, and the exception cost the run its Telegram delivery."""
    forever = {**SILENCE, "until": 1e12}
    damaged = {**SILENCE, "id": "bad1", "until": "soon"}  # a hand edit
    kept, (request,) = relays({}, [damaged, forever])
    assert ts(request["body"]["endsAt"]) == pytest.approx(NOW + 365 * 86400)
    assert list(kept) == ["silence:a1b2"]
    assert any("bad1" in r.getMessage() and r.levelname == "WARNING" for r in monitor_records)
    taken = alertmanager.settle(kept, [request], {"silence:a1b2": {"ok": True, "id": "am-1", "startsAt": "x"}})
    again, requests = relays(taken, [forever], now=NOW + 86400)
    assert requests == [] and again == taken  # held: not renewed by every run
    later, (renewal,) = relays(taken, [forever], now=NOW + 200 * 86400)  # half a year gone: a year again
    assert ts(renewal["body"]["endsAt"]) == pytest.approx(NOW + 565 * 86400) and renewal["body"]["id"] == "am-1"
    endless, _ = relays({}, [{**SILENCE, "until": float("inf")}])
    assert endless["silence:a1b2"]["until"] == NOW + 365 * 86400


def test_a_flapping_check_stays_firing_instead_of_resolving_each_run():
    _, state, _ = plan({}, [result("disk:/", CRITICAL)], {"disk:/": entry(CRITICAL)})
    posts, state, _ = plan(state, [result("disk:/", OK)], {"disk:/": entry(OK, count=0, flapping=NOW)})
    assert len(posts) == 1 and ts(posts[0]["endsAt"]) > NOW and state["resolved"] == []


def test_a_check_gone_from_the_config_is_resolved_and_other_commands_alerts_are_kept():
    backup = {"backup:db": entry(CRITICAL)}
    _, state, _ = plan({}, [result("backup:db", CRITICAL, kind="backup")], backup, command="backup-check")
    _, state, _ = plan(state, [result("disk:/", CRITICAL)], {"disk:/": entry(CRITICAL)})
    posts, state, _ = plan(state, [], {}, now=NOW + 300)
    assert [p["labels"]["check"] for p in posts] == ["disk:/"] and ts(posts[0]["endsAt"]) == pytest.approx(NOW + 300)
    assert set(state["firing"]) == {"backup:db"}
    # health --only vault: the disk check was not run, so it is not gone.
    _, state, _ = plan({}, [result("disk:/", CRITICAL)], {"disk:/": entry(CRITICAL)})
    posts, _, _ = plan(state, [], {}, kinds_run={"vault"})
    assert posts == []


def test_one_alert_name_per_kind_of_check_derived_from_modules_kinds():
    assert alertmanager.alertname("system", "disk:/var") == "MonitorSystemDisk"
    assert alertmanager.alertname("system", "cpu") == "MonitorSystemCpu"
    assert alertmanager.alertname("scraper", "scraper:uniswap") == "MonitorScraper"
    assert alertmanager.alertname("vault", "vault-token:scraper") == "MonitorVaultToken"
    assert alertmanager.alertname("logs", "log:app") == "MonitorLog"
    names = {alertmanager.alertname(kind, f"{kind}:x") for kind, _, _ in MODULES.values()}
    assert all(n.isidentifier() and n.startswith("Monitor") for n in names)
    assert len(names) == len({kind for kind, _, _ in MODULES.values()})


def test_pending_resolutions_are_bounded_and_the_dropped_are_returned():
    stored = {"firing": {}, "resolved": [{"labels": {"check": f"c{i}"}, "endsAt": "x"}
                                         for i in range(alertmanager.MAX_PENDING + 5)]}
    _, state, dropped = plan(stored, [], {})
    assert len(state["resolved"]) == alertmanager.MAX_PENDING and len(dropped) == 5


# --- posting, against loopback replicas --------------------------------------------------------

class _Replica(BaseHTTPRequestHandler):
    """An Alertmanager's API as far as monitor uses it: alerts taken, silences made, read and
    expired (`silences`: id -> body), every request kept in `received`; `status` answers all."""

    protocol_version = "HTTP/1.1"

    def _answer(self, status, payload=b""):
        self.send_response(status)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        try:
            self.wfile.write(payload)
        except OSError:
            pass

    def _handle(self):
        server = self.server
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        server.received.append((self.path, dict(self.headers.items()), json.loads(body) if body else None))
        if self.command != "GET":
            server.methods.append(self.command)
        status = server.status
        if status == "hang":
            server.release.wait(10)
            return
        if status != 200:
            return self._answer(status, b"x" * (10 * 1024 * 1024) if status == 413 else b"")
        if self.path == "/api/v2/silences":
            silence = json.loads(body)
            known = silence.get("id")
            if known and known not in server.silences:
                return self._answer(404, b'"silence not found"')
            new_id = known if known and silence["startsAt"] == server.silences[known]["startsAt"] else \
                f"00000000-0000-4000-8000-{len(server.silences):012d}"
            server.silences[new_id] = {**silence, "id": new_id}
            return self._answer(200, json.dumps({"silenceID": new_id}).encode())
        if self.path.startswith("/api/v2/silence/"):
            found = server.silences.get(self.path.rsplit("/", 1)[1])
            if found is None:
                return self._answer(500, b'"silence not found"')  # as Alertmanager 0.25 says it
            if self.command == "DELETE":
                found["expired"] = True
                return self._answer(200)
            return self._answer(200, json.dumps(found).encode())
        self._answer(200)

    do_GET = do_POST = do_DELETE = _handle

    def log_message(self, format, *args):
        pass


@pytest.fixture
def replicas():
    servers = []

    def make(status=200):
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Replica)
        server.daemon_threads, server.received, server.status = True, [], status
        server.silences, server.methods = {}, []
        server.url = f"http://127.0.0.1:{server.server_address[1]}"
        server.release = threading.Event()
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        return server
    yield make
    for server in servers:
        server.release.set()
        server.shutdown()
        server.server_close()


def _config(tmp_path, urls, **extra):
    section = {"urls": urls, "timeout": "1s", **extra}
    return monitor_config.build({"alertmanager": section, "paths": {"state": str(tmp_path / "state")}},
                                None, str(tmp_path))


def _post(config, results, entries, now=NOW, environ=None, silences=()):
    os.makedirs(config["paths"]["state"], exist_ok=True)
    return alertmanager.post(config, "health", results, None, entries, list(silences), "vps-1", now, PERIOD,
                             environ=environ or {})


QUIET = {"silences": 0, "silences_pending": 0}


def test_every_replica_gets_the_alerts_with_the_bearer_token_and_the_token_is_never_logged(
        tmp_path, replicas, monitor_records):
    one, two = replicas(), replicas(500)
    token = "am-bearer-token-0123456789abcdef"
    config = _config(tmp_path, [f"http://127.0.0.1:{one.server_address[1]}",
                                f"http://127.0.0.1:{two.server_address[1]}/prefix/"], token_env="AM_TOKEN")
    summary = _post(config, [result("disk:/", CRITICAL)], {"disk:/": entry(CRITICAL)}, environ={"AM_TOKEN": token})
    assert summary == {"firing": 1, "resolved": 0, "accepted": 1, "urls": 2, "pending": 0, **QUIET}
    assert one.received[0][0] == "/api/v2/alerts" and two.received[0][0] == "/prefix/api/v2/alerts"
    assert all(headers["Authorization"] == f"Bearer {token}" for _, headers, _ in one.received + two.received)
    assert one.received[0][2][0]["labels"]["check"] == "disk:/"
    failed = [r.getMessage() for r in monitor_records if getattr(r, "event", "") == "alertmanager_failed"]
    assert failed and "HTTP 500" in failed[0] and all(token not in m for m in failed)


def test_a_token_file_others_can_read_is_used_with_a_warning_and_a_missing_one_is_an_error(
        tmp_path, replicas, monitor_records):
    replica = replicas()
    path = tmp_path / "am-token"
    path.write_text("am-file-token-0123456789\n")
    path.chmod(0o644)
    config = _config(tmp_path, [f"http://127.0.0.1:{replica.server_address[1]}"], token_file=str(path))
    _post(config, [result("disk:/", CRITICAL)], {"disk:/": entry(CRITICAL)})
    assert replica.received[0][1]["Authorization"] == "Bearer am-file-token-0123456789"
    warned = [r for r in monitor_records if getattr(r, "event", "") == "config_exposure"]
    assert warned and "chmod 600" in warned[0].getMessage() and "am-file-token" not in warned[0].getMessage()
    path.unlink()
    _post(config, [result("disk:/", CRITICAL)], {"disk:/": entry(CRITICAL)}, now=NOW + 300)
    assert "Authorization" not in replica.received[1][1]
    missing = [r for r in monitor_records if getattr(r, "event", "") == "alertmanager_token"]
    assert missing and missing[0].levelname == "ERROR" and "no such file; posting without a token" in \
        missing[0].getMessage()


def test_a_resolution_no_replica_took_waits_in_state_for_the_next_run(tmp_path, replicas):
    replica = replicas()
    config = _config(tmp_path, [f"http://127.0.0.1:{replica.server_address[1]}"])
    _post(config, [result("disk:/", CRITICAL)], {"disk:/": entry(CRITICAL)})
    replica.status = 503
    summary = _post(config, [result("disk:/", OK)], {"disk:/": entry(OK, count=0)}, now=NOW + 300)
    assert summary["resolved"] == 1 and summary["accepted"] == 0 and summary["pending"] == 1
    saved = json.loads((tmp_path / "state" / alertmanager.STATE_FILE).read_text())
    assert len(saved["resolved"]) == 1
    replica.status = 200
    summary = _post(config, [result("disk:/", OK)], {"disk:/": entry(OK, count=0)}, now=NOW + 600)
    assert summary == {"firing": 0, "resolved": 1, "accepted": 1, "urls": 1, "pending": 0, **QUIET}
    resolved = replica.received[-1][2]
    assert ts(resolved[0]["endsAt"]) == pytest.approx(NOW + 300, abs=0.01)
    # Delivered: nothing more is posted.
    assert _post(config, [result("disk:/", OK)], {"disk:/": entry(OK, count=0)}, now=NOW + 900)["resolved"] == 0


def test_a_replica_that_never_answers_costs_the_timeout_not_more_and_a_huge_answer_is_not_read_whole(
        tmp_path, replicas):
    hanging, huge, fine = replicas("hang"), replicas(413), replicas()
    config = _config(tmp_path, [f"http://127.0.0.1:{s.server_address[1]}" for s in (hanging, huge, fine)])
    started = time.monotonic()
    answers = dict(alertmanager.send(config["alertmanager"]["urls"], b"[]", None, 1.0))
    assert time.monotonic() - started < 5.0  # the 1 s timeout, not the hanging replica's 10 s (generous: a busy CI)
    assert answers[f"http://127.0.0.1:{fine.server_address[1]}"] is None
    assert "within 1s" in answers[f"http://127.0.0.1:{hanging.server_address[1]}"]
    assert answers[f"http://127.0.0.1:{huge.server_address[1]}"] == "HTTP 413"  # capped: the 10 MB body is not read, nor quoted


def test_a_url_password_is_sent_as_basic_auth_and_masked_in_the_log(tmp_path, replicas, monitor_records,
                                                                    monkeypatch):
    replica = replicas(401)
    url = f"http://monitor:s3cret-pass-word@127.0.0.1:{replica.server_address[1]}"
    assert alertmanager.shown(url) == f"http://***@127.0.0.1:{replica.server_address[1]}"
    monkeypatch.setenv("AM_PASS", "s3cret-pass-word")
    config = _config(tmp_path, [url.replace("s3cret-pass-word", "${AM_PASS}")])
    _post(config, [result("disk:/", CRITICAL)], {"disk:/": entry(CRITICAL)})
    assert replica.received[0][1]["Authorization"].startswith("Basic ")
    logged = " ".join(r.getMessage() for r in monitor_records)
    assert "HTTP 401" in logged and "s3cret-pass-word" not in logged


def test_when_every_replica_refuses_the_alerts_the_run_says_notify_error_on_stderr_and_keeps_its_state(
        tmp_path, replicas, monitor_records, run_monitor, envelope):
    refusing = [replicas(401), replicas(404)]
    urls = [f"http://127.0.0.1:{s.server_address[1]}" for s in refusing]
    summary = _post(_config(tmp_path, urls), [result("disk:/", CRITICAL)], {"disk:/": entry(CRITICAL)})
    assert summary["accepted"] == 0 and summary["notify_error"].startswith(
        "alertmanager: every replica refused the alerts (HTTP 401") and "HTTP 404" in summary["notify_error"]
    assert [r.levelname for r in monitor_records if "every replica" in r.getMessage()] == ["ERROR"]
    # Through a run: the envelope's notify_error (not a state problem), the line cron mails, and the
    # state saved all the same (what was posted firing, to be resolved later).
    (tmp_path / "run").mkdir()
    proc = run_monitor(["health", "--format", "json"], tmp_path / "run",
                       config=VERDICT_CONFIGS["critical"] + f"[alertmanager]\nurls = {json.dumps(urls)}\n")
    data = envelope(proc)
    assert proc.returncode == 2 and "state_write_error" not in data
    assert data["notify_error"].startswith("alertmanager: every replica refused the alerts (HTTP 401")
    assert f"monitor health: notify error: {data['notify_error']}" in proc.stderr.splitlines()
    saved = json.loads((tmp_path / "run" / "state" / alertmanager.STATE_FILE).read_text())
    assert "disk:/" in saved["firing"]
    refusing.append(replicas())  # one replica takes them: warnings only
    (tmp_path / "run" / "test.toml").unlink()
    proc = run_monitor(["health", "--format", "json"], tmp_path / "run", config=VERDICT_CONFIGS["critical"]
                       + f"[alertmanager]\nurls = {json.dumps(urls + [refusing[-1].url])}\n")
    assert "notify_error" not in envelope(proc) and proc.stderr == ""


def test_a_silence_goes_to_one_replica_after_another_until_one_takes_it_and_an_unmute_expires_it(
        tmp_path, replicas):
    down, up = replicas(503), replicas()
    config = _config(tmp_path, [down.url, up.url])
    disk = ([result("disk:/", CRITICAL)], {"disk:/": entry(CRITICAL)})
    summary = _post(config, *disk, silences=[SILENCE])
    assert (summary["firing"], summary["silences"], summary["silences_pending"]) == (1, 1, 0)
    assert sorted(p for p, _, _ in down.received) == ["/api/v2/alerts", "/api/v2/silences"]  # asked first
    (made,) = up.silences.values()
    assert made["matchers"][-1] == {"name": "check", "value": "(?s:disk:.*)", "isRegex": True, "isEqual": True}
    saved = json.loads((tmp_path / "state" / alertmanager.STATE_FILE).read_text())["silences"]["silence:a1b2"]
    assert (saved["id"], saved["startsAt"]) == (made["id"], made["startsAt"])  # the start read back
    # Held: the next runs say nothing more about it.
    before = len(up.methods)
    _post(config, *disk, silences=[SILENCE], now=NOW + 300)
    assert up.methods[before:] == ["POST"]  # the alerts alone
    # Removed early (silence remove, /unmute): expired in Alertmanager.
    summary = _post(config, *disk, now=NOW + 600)
    assert made.get("expired") is True and (summary["silences"], summary["silences_pending"]) == (0, 0)
    assert "silence:a1b2" not in json.loads((tmp_path / "state" / alertmanager.STATE_FILE).read_text())["silences"]


def test_a_silence_no_replica_took_waits_for_the_next_run_and_a_hanging_replica_leaves_the_others_their_turn(
        tmp_path, replicas):
    hanging, up = replicas("hang"), replicas(503)
    config = _config(tmp_path, [hanging.url, up.url])
    disk = ([], {})
    started = time.monotonic()
    summary = _post(config, *disk, silences=[SILENCE])
    assert time.monotonic() - started < 5.0  # within alertmanager.timeout (1 s), generously
    assert (summary["silences"], summary["silences_pending"]) == (0, 1) and up.methods == ["POST"]
    up.status = 200
    summary = _post(config, *disk, silences=[SILENCE], now=NOW + 300)
    assert (summary["silences"], summary["silences_pending"]) == (1, 0) and len(up.silences) == 1


def test_an_ack_is_relayed_renewed_in_place_and_expired_once_the_alert_resolves(tmp_path, replicas):
    replica = replicas()
    config = _config(tmp_path, [replica.url])
    acked = {"disk:/": entry(CRITICAL, ack={"by": "@bob", "at": NOW, "status": CRITICAL})}
    assert _post(config, [result("disk:/", CRITICAL)], acked)["silences"] == 1
    (made,) = replica.silences.values()
    assert {m["name"]: m["value"] for m in made["matchers"]}["severity"] == "critical"
    _post(config, [result("disk:/", CRITICAL)], acked, now=NOW + 300)
    (renewed,) = replica.silences.values()  # the same silence, a later end
    assert renewed["id"] == made["id"] and ts(renewed["endsAt"]) == pytest.approx(NOW + 300 + 3 * PERIOD)
    summary = _post(config, [result("disk:/", OK)], {"disk:/": entry(OK, count=0)}, now=NOW + 600)
    assert renewed.get("expired") is True and summary["silences"] == 0


def test_an_alertmanager_section_needs_a_url(tmp_path):
    with pytest.raises(monitor_config.ConfigError, match=r"alertmanager\.urls: name at least one"):
        monitor_config.build({"alertmanager": {"urls": []}}, None, str(tmp_path))


def test_host_names_the_instance_and_is_checked(tmp_path):
    assert monitor_config.build({"host": "vps-1"}, None, str(tmp_path))["host"] == "vps-1"
    with pytest.raises(monitor_config.ConfigError, match=r"^host: expected"):
        monitor_config.build({"host": "a b"}, None, str(tmp_path))


def test_a_damaged_firing_record_is_dropped_not_a_crash_that_costs_the_runs_alerts():
    """A hand-edited alertmanager.json (a firing record without labels) raised KeyError in every run."""
    stored = {"firing": {"disk:/": {"kind": "system"}, "cpu": "junk"}, "resolved": []}
    posts, state, _ = plan(stored, [result("disk:/", CRITICAL)], {"disk:/": entry(CRITICAL)})
    assert [p["labels"]["check"] for p in posts] == ["disk:/"] and set(state["firing"]) == {"disk:/"}
    posts, state, _ = plan(stored, [result("disk:/", OK)], {})  # nothing to resolve from a record without labels
    assert posts == [] and state["firing"] == {}


def test_a_hand_edited_silence_id_in_state_never_reaches_a_request_path():
    stored = {"silence:a1b2": {"id": "../../-/reload", "until": NOW + 3600, "matchers": []},
              "silence:gone": {"id": "x/y", "until": NOW + 3600}, "junk": "text"}
    kept, requests = relays(stored, [SILENCE])
    assert [(r["method"], r["path"], "id" in r["body"]) for r in requests] == [("POST", "/api/v2/silences", False)]
    assert kept["silence:a1b2"]["id"] is None and set(kept) == {"silence:a1b2"}


# --- the Alertmanager step inside a run's notifications: never at Telegram's cost -------------

def _notify_run(install, urls, status, minutes=5, timeout=1.0, monotonic=time.monotonic):
    """One run's notify() with [telegram] (the loopback stand-in) and [alertmanager] at `urls`."""
    from monitor.alerts.notify import notify
    from monitor.alerts.telegram import TelegramClient
    from tests.test_telegram_bot import TOKEN

    install.now += minutes * 60
    config = install.config()
    config["alertmanager"] = monitor_config.build({"alertmanager": {"urls": urls, "timeout": f"{timeout:g}s"}},
                                                  None, str(install.folder))["alertmanager"]
    os.makedirs(config["paths"]["state"], exist_ok=True)
    client = TelegramClient(TOKEN, install.telegram.api_url, install.timeout, sleep=lambda s: None,
                            monotonic=monotonic)
    return notify(config, "health", [result("disk:/", status)], None, "vps-1", now=install.now, client=client)


@pytest.fixture
def install(tmp_path):
    from tests.telegram_standin import TelegramStandIn
    from tests.test_telegram_bot import Install

    with TelegramStandIn() as telegram:
        yield Install(tmp_path, telegram)


def test_a_silence_saved_for_ever_by_an_older_version_still_lets_the_run_page_and_is_relayed_for_a_year(
        install, replicas):
    replica = replicas()
    (install.state).mkdir()
    (install.state / "silences.json").write_text(json.dumps({"silences": [
        {"id": "ab12", "pattern": "backup:*", "until": 1e12, "reason": "", "created": install.now}]}))
    _notify_run(install, [replica.url], OK)
    summary = _notify_run(install, [replica.url], CRITICAL)
    assert summary["sent"] == 1 and "CRITICAL" in install.telegram.delivered[0].text
    (made,) = replica.silences.values()
    assert ts(made["endsAt"]) <= install.now + 365 * 86400 + 1


def test_a_bug_in_the_alertmanager_step_is_an_error_and_notify_error_and_telegram_is_told_all_the_same(
        install, replicas, monkeypatch, monitor_records):
    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(alertmanager, "plan_relays", broken)
    _notify_run(install, [replicas().url], OK)
    monitor_records.clear()
    summary = _notify_run(install, [replicas().url], CRITICAL)
    assert summary["sent"] == 1 and "CRITICAL" in install.telegram.delivered[0].text
    assert summary["notify_error"] == "alertmanager: RuntimeError: a bug"
    assert [r.levelname for r in monitor_records if getattr(r, "event", None) == "alertmanager_error"] == ["ERROR"]


def test_an_alertmanager_that_takes_its_whole_timeout_leaves_telegram_its_own_time(install, monkeypatch):
    """alertmanager.timeout 21 s, Alertmanager blackholed: its time came out of Telegram's 20 s,
    and no alert reached Telegram while Alertmanager hung. The clock is the client's, skewed."""
    skew = [0.0]
    post = alertmanager.post

    def blackholed(*args, **kwargs):
        skew[0] += 21.0  # what a blackholed replica costs, on the run's clock
        return post(*args, **kwargs)

    monkeypatch.setattr(alertmanager, "post", blackholed)
    clock = lambda: time.monotonic() + skew[0]  # noqa: E731
    _notify_run(install, ["http://127.0.0.1:9"], OK, timeout=21.0, monotonic=clock)
    summary = _notify_run(install, ["http://127.0.0.1:9"], CRITICAL, timeout=21.0, monotonic=clock)
    assert summary["sent"] == 1 and "CRITICAL" in install.telegram.delivered[0].text
