"""Alertmanager as an alert sink (monitor/alerts/alertmanager.py): what each run posts,
decided from plain data, and the posting itself against loopback HTTP replicas."""

import json
import os
import threading
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from monitor import config as monitor_config
from monitor.alerts import alertmanager
from monitor.checks import MODULES
from monitor.results import CRITICAL, OK, WARNING, Result, with_identity

NOW = 1_800_000_000.0
PERIOD = 300.0


def result(check_id, status, kind="system", message="disk / 96% used", value=96.0):
    return with_identity(Result(status, message, value=value, unit="%", warning=90, critical=95),
                         check_id, kind, 1.0)


def entry(status, count=1, since=NOW - 600, **extra):
    return {"command": "health", "kind": "system", "status": status, "count": count, "since": since, **extra}


def plan(stored, results, entries, silences=(), command="health", kinds_run=None, alert_after=1, now=NOW):
    return alertmanager.plan(stored, results, entries, list(silences), command, kinds_run, "vps-1", "prod",
                             alert_after, now, PERIOD)


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


def test_a_silenced_check_is_not_posted_nor_resolved_while_silenced():
    silence = {"id": "s1", "pattern": "disk:*", "until": NOW + 3600}
    posts, state, _ = plan({}, [result("disk:/", CRITICAL)], {"disk:/": entry(CRITICAL)}, [silence])
    assert posts == []
    _, state, _ = plan({}, [result("disk:/", CRITICAL)], {"disk:/": entry(CRITICAL)})
    posts, state, _ = plan(state, [result("disk:/", OK)], {"disk:/": entry(OK, count=0)}, [silence])
    assert posts == [] and "disk:/" in state["firing"]  # resolved once the silence is over
    posts, _, _ = plan(state, [result("disk:/", OK)], {"disk:/": entry(OK, count=0)})
    assert len(posts) == 1 and ts(posts[0]["endsAt"]) == pytest.approx(NOW, abs=0.01)


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
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        server = self.server
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        server.received.append((self.path, dict(self.headers.items()), json.loads(body)))
        status = server.status
        if status == "hang":
            server.release.wait(10)
            return
        payload = b"x" * (10 * 1024 * 1024) if status == 413 else b""
        self.send_response(status)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        try:
            self.wfile.write(payload)
        except OSError:
            pass

    def log_message(self, format, *args):
        pass


@pytest.fixture
def replicas():
    servers = []

    def make(status=200):
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Replica)
        server.daemon_threads, server.received, server.status = True, [], status
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


def _post(config, results, entries, now=NOW, environ=None):
    os.makedirs(config["paths"]["state"], exist_ok=True)
    return alertmanager.post(config, "health", results, None, entries, [], "vps-1", now, PERIOD,
                             environ=environ or {})


def test_every_replica_gets_the_alerts_with_the_bearer_token_and_the_token_is_never_logged(
        tmp_path, replicas, monitor_records):
    one, two = replicas(), replicas(500)
    token = "am-bearer-token-0123456789abcdef"
    config = _config(tmp_path, [f"http://127.0.0.1:{one.server_address[1]}",
                                f"http://127.0.0.1:{two.server_address[1]}/prefix/"], token_env="AM_TOKEN")
    summary = _post(config, [result("disk:/", CRITICAL)], {"disk:/": entry(CRITICAL)}, environ={"AM_TOKEN": token})
    assert summary == {"firing": 1, "resolved": 0, "accepted": 1, "urls": 2, "pending": 0}
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
    assert summary == {"firing": 0, "resolved": 1, "accepted": 1, "urls": 1, "pending": 0}
    resolved = replica.received[-1][2]
    assert ts(resolved[0]["endsAt"]) == pytest.approx(NOW + 300, abs=0.01)
    # Delivered: nothing more is posted.
    assert _post(config, [result("disk:/", OK)], {"disk:/": entry(OK, count=0)}, now=NOW + 900)["resolved"] == 0


def test_a_replica_that_never_answers_costs_the_timeout_not_more_and_a_huge_answer_is_not_read_whole(
        tmp_path, replicas):
    hanging, huge, fine = replicas("hang"), replicas(413), replicas()
    config = _config(tmp_path, [f"http://127.0.0.1:{s.server_address[1]}" for s in (hanging, huge, fine)])
    answers = dict(alertmanager.send(config["alertmanager"]["urls"], b"[]", None, 1.0))
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


def test_when_every_replica_refuses_the_alerts_cron_hears_of_it_on_stderr(tmp_path, replicas, monitor_records,
                                                                        capsys):
    refusing = [replicas(401), replicas(404)]
    config = _config(tmp_path, [f"http://127.0.0.1:{s.server_address[1]}" for s in refusing])
    assert _post(config, [result("disk:/", CRITICAL)], {"disk:/": entry(CRITICAL)})["accepted"] == 0
    said = capsys.readouterr().err
    assert said.startswith("monitor health: alertmanager: every replica refused the alerts (HTTP 401")
    assert "HTTP 404" in said and [r.levelname for r in monitor_records if "every replica" in r.getMessage()] == ["ERROR"]
    refusing.append(replicas())  # one replica takes them: warnings only
    config = _config(tmp_path, [f"http://127.0.0.1:{s.server_address[1]}" for s in refusing])
    _post(config, [result("disk:/", CRITICAL)], {"disk:/": entry(CRITICAL)})
    assert capsys.readouterr().err == ""


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
