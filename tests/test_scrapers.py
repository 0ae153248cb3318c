"""Scraper checks against real loopback servers, real processes and real files."""

import gzip
import importlib.util
import os
import re
import subprocess
import sys
import time
import tracemalloc
import uuid
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import pytest

from monitor import http
from monitor.checks.scrapers import scraper
from monitor.results import CRITICAL, OK, UNKNOWN, WARNING, Threshold
from monitor.runner import Check, run_checks
from tests.loopback import server, session  # noqa: F401 (fixtures)
from tests.loopback import (closed_port, elapsed, endless, redirect, reply, serve, silent_port, sized,
                            trickle)

ROOT = Path(__file__).resolve().parent.parent




def config(**entry):
    """A `[[scrapers]]` entry as the config loader returns it."""
    base = {"name": "uniswap", "url": None, "expect_json": {}, "latency_ms": Threshold(1000, 3000),
            "process": None, "heartbeat_file": None, "heartbeat_max_age": 900.0, "timeout": 5.0}
    return {**base, **entry}


def assert_no_exception_text(message: str):
    for fragment in ("HTTPConnectionPool", "Max retries", "object at 0x", "Errno", "urllib3", "<"):
        assert fragment not in message


def fake_processes(*entries):
    """A stand-in for psutil.process_iter: (pid, cmdline) pairs with `.info` like psutil's."""
    def process_iter(attrs):
        assert attrs == ["cmdline", "uids"]
        return [SimpleNamespace(pid=pid, info={"cmdline": cmdline}) for pid, cmdline in entries]
    return process_iter


# --- HTTP probe ----------------------------------------------------------------------

def test_healthy_endpoint_with_matching_json_is_ok(server, session):
    url = server.route("/health", reply(json={"status": "ok", "data": {"status": "running", "lag": 3}}))
    result = scraper(config(url=url, expect_json={"status": "ok", "data.status": "running", "data.lag": 3}),
                     session)
    assert result.status == OK, result.message
    assert result.unit == "ms" and 0 <= result.value < 1000
    assert (result.warning, result.critical) == (1000, 3000)
    assert result.details["http"]["status_code"] == 200
    assert result.message.startswith("HTTP 200 in ")


def test_json_field_with_another_value_is_critical_naming_path_expected_and_actual(server, session):
    url = server.route("/health", reply(json={"data": {"status": "degraded"}}))
    result = scraper(config(url=url, expect_json={"data.status": "ok"}), session)
    assert result.status == CRITICAL
    assert 'data.status is "degraded", expected "ok"' in result.message


def test_absent_json_path_is_critical(server, session):
    url = server.route("/health", reply(json={"data": {}}))
    result = scraper(config(url=url, expect_json={"data.status": "ok"}), session)
    assert result.status == CRITICAL
    assert 'data.status is missing, expected "ok"' in result.message


def test_json_true_does_not_match_a_one(server, session):
    url = server.route("/health", reply(json={"ready": 1}))
    result = scraper(config(url=url, expect_json={"ready": True}), session)
    assert result.status == CRITICAL
    assert "ready is 1, expected true" in result.message


def test_long_unexpected_value_is_cut_in_the_message(server, session):
    url = server.route("/health", reply(json={"status": "x" * 5000}))
    result = scraper(config(url=url, expect_json={"status": "ok"}), session)
    assert result.status == CRITICAL
    assert len(result.message) < 200 and "…" in result.message


def test_body_that_is_not_json_is_critical_when_json_is_expected(server, session):
    url = server.route("/health", reply(body="<html>oops</html>"))
    result = scraper(config(url=url, expect_json={"status": "ok"}), session)
    assert result.status == CRITICAL
    assert 'body is not JSON (expected status = "ok")' in result.message


def test_503_is_critical_with_status_and_latency(server, session):
    url = server.route("/health", reply(503, json={"status": "ok"}))
    result = scraper(config(url=url, expect_json={"status": "ok"}), session)
    assert result.status == CRITICAL
    assert result.message.startswith("HTTP 503 in ") and result.message.endswith(" ms")
    assert result.details["http"]["status_code"] == 503


def test_answer_slower_than_critical_latency_is_critical(server, session):
    url = server.route("/slow", reply(json={"status": "ok"}, delay=1.5))
    result = scraper(config(url=url, latency_ms=Threshold(500, 1000)), session)
    assert result.status == CRITICAL
    assert result.value >= 1500
    assert "slower than 1000 ms" in result.message


def test_answer_slower_than_warning_latency_is_a_warning(server, session):
    url = server.route("/slow", reply(json={"status": "ok"}, delay=0.3))
    result = scraper(config(url=url, latency_ms=Threshold(200, 1000)), session)
    assert result.status == WARNING
    assert "slower than 200 ms" in result.message


def test_answer_later_than_timeout_is_critical_within_the_timeout(server, session):
    url = server.route("/slow", reply(json={"status": "ok"}, delay=30))
    result, took = elapsed(scraper, config(url=url, timeout=0.5), session)
    assert result.status == CRITICAL
    assert result.message == "HTTP: timed out after 500ms"
    assert result.value is None
    assert took < 5  # generous for a busy machine; far below the 30 s the server takes


def test_connection_refused_is_critical(session):
    result = scraper(config(url=f"http://127.0.0.1:{closed_port()}/health"), session)
    assert result.status == CRITICAL
    assert result.message == "HTTP: connection refused"
    assert result.details["http"]["error"] == "connection refused"


def test_socket_that_never_answers_is_critical_within_the_timeout(session):
    with silent_port() as port:
        result, took = elapsed(scraper, config(url=f"http://127.0.0.1:{port}/health", timeout=0.5), session)
    assert result.status == CRITICAL
    assert "timed out after 500ms" in result.message
    assert took < 5  # generous for a busy machine: the peer never answers, only the timeout ends it


def test_5mb_body_is_read_no_further_than_1mb(server, session):
    payload = b" " * 5_000_000
    url = server.route("/big", sized(payload))
    tracemalloc.start()
    try:
        resp, took = elapsed(http.get, session, url, 5.0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert resp.truncated and len(resp.body) == http.MAX_BYTES
    assert peak < 2_500_000, peak  # the 1 MB kept, its pieces; a body held whole would be 5 MB
    assert took < 4  # generous for a busy machine; below the 5 s timeout: it stopped at the bound


def test_5mb_body_with_expect_json_is_critical_and_quick(server, session):
    url = server.route("/big", sized(b"{" + b" " * 5_000_000 + b"}"))
    result, took = elapsed(scraper, config(url=url, expect_json={"status": "ok"}), session)
    assert result.status == CRITICAL
    assert "body is over 1,000,000 bytes, not parsed" in result.message
    assert result.details["http"]["truncated"] is True
    assert took < 4  # generous for a busy machine; below the 5 s timeout: it stopped at the bound


def test_gzip_body_is_decoded_and_a_gzip_bomb_is_bounded_too(server, session):
    healthy = gzip.compress(b'{"status": "ok"}')
    bomb = gzip.compress(b"0" * 50_000_000)  # 50 KB on the wire
    server.route("/health", reply(body=healthy, headers={"Content-Encoding": "gzip"}))
    server.route("/bomb", reply(body=bomb, headers={"Content-Encoding": "gzip"}))
    assert scraper(config(url=server.url("/health"), expect_json={"status": "ok"}), session).status == OK
    tracemalloc.start()
    try:
        resp, took = elapsed(http.get, session, server.url("/bomb"), 5.0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert resp.truncated and len(resp.body) == http.MAX_BYTES
    assert peak < 2_500_000, peak
    assert took < 4  # generous for a busy machine; below the 5 s timeout: it stopped at the bound


def test_endless_body_stops_at_the_bound(server, session):
    url = server.route("/endless", endless())
    result, took = elapsed(scraper, config(url=url), session)
    assert result.status == OK  # no JSON expected: a 200 is a 200
    assert result.details["http"]["body_bytes"] == http.MAX_BYTES
    assert took < 4  # generous for a busy machine; below the 5 s timeout: it stopped at the bound


def test_trickling_body_ends_within_the_timeout(server, session):
    # Every byte comes within requests' per-read timeout: only the overall deadline,
    # shrinking each read's wait to what is left, stops it at 2 s (not at the 2nd byte, 3.8 s).
    url = server.route("/trickle", trickle(length=100, interval=1.9))
    result, took = elapsed(scraper, config(url=url, timeout=2.0), session)
    assert result.status == CRITICAL
    assert result.message == "HTTP: timed out after 2s"
    assert took < 3.5  # 1.5 s of slack for a busy machine, still below the 2nd byte's 3.8 s


def test_301_is_followed_to_a_healthy_endpoint(server, session):
    server.route("/health", reply(json={"status": "ok"}))
    url = server.route("/old", redirect("/health", 301))
    result = scraper(config(url=url, expect_json={"status": "ok"}), session)
    assert result.status == OK, result.message
    assert result.details["http"]["redirects"] == 1


def test_redirect_loop_ends_with_a_clear_message(server, session):
    url = server.route("/loop", redirect("/loop", 302))
    result, took = elapsed(scraper, config(url=url), session)
    assert result.status == CRITICAL
    assert result.message == "HTTP: too many redirects (more than 10)"
    assert took < 4  # generous for a busy machine; below the 5 s timeout


def test_redirect_to_another_origin_drops_the_configured_headers():
    with serve() as first, serve() as second:
        second.route("/quota", reply(json={}))
        url = first.route("/quota", redirect(second.url("/quota"), 302))
        http.get(None, url, 2.0, headers={"X-Api-Key": "k-123"})
    assert first.received[0][1].get("X-Api-Key") == "k-123"
    assert "X-Api-Key" not in second.received[0][1]


def test_redirect_body_is_never_read(server, session):
    server.route("/health", reply(json={"status": "ok"}))
    server.routes["/old"] = lambda handler: (
        handler.wfile.write(b"HTTP/1.1 302 Found\r\nLocation: /health\r\nContent-Length: 5000000\r\n\r\n"),
        handler.server.closing.wait(10))
    result, took = elapsed(scraper, config(url=server.url("/old"), timeout=5.0), session)
    assert result.status == OK, result.message  # reading the 5 MB that never come would time out
    assert took < 4  # generous for a busy machine; below the 5 s timeout


def test_errors_a_loopback_server_cannot_produce_read_as_short_reasons(monkeypatch):
    import socket
    import ssl

    from monitor import http_loop

    cert = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")
    cert.verify_message, cert.reason = "self-signed certificate", "CERTIFICATE_VERIFY_FAILED"
    failures = {"tls.example": cert, "scraper.internal": socket.gaierror(-2, "Name or service not known")}

    async def connect(self, scheme, host, port, *tls_settings):  # what the TLS handshake / the resolver raise
        raise failures[host]

    monkeypatch.setattr(http_loop.Prober, "_connect", connect)
    with pytest.raises(http.ProbeError) as tls:
        http.get(None, "https://tls.example/health?apikey=s3cret", 1.0)
    with pytest.raises(http.ProbeError) as lookup:
        http.get(None, "http://scraper.internal/health?apikey=s3cret", 1.0)
    assert tls.value.reason == "TLS certificate not trusted: self-signed certificate"
    assert lookup.value.reason == "DNS lookup failed for host scraper.internal"
    for reason in (tls.value.reason, lookup.value.reason):
        assert "s3cret" not in reason
        assert_no_exception_text(reason)


def test_network_failures_never_show_an_exception_repr(session):
    with silent_port() as port:
        messages = [scraper(config(url=f"http://127.0.0.1:{port}/", timeout=0.2), session).message,
                    scraper(config(url=f"http://127.0.0.1:{closed_port()}/"), session).message]
    for message in messages:
        assert_no_exception_text(message)


# --- process probe -------------------------------------------------------------------

def test_process_probe_counts_matching_command_lines():
    procs = fake_processes((101, ["python", "scraper.py", "--source", "uniswap"]),
                           (102, ["python", "scraper.py", "--source", "sushi"]),
                           (103, ["python", "scraper.py", "--source", "uniswap", "--worker", "2"]),
                           (104, None), (105, []))
    result = scraper(config(process=r"scraper\.py .*--source uniswap"), process_iter=procs)
    assert result.status == OK
    assert result.details["process"]["count"] == 2
    assert result.details["process"]["pids"] == [101, 103]
    assert result.value is None and result.unit is None


def test_no_matching_process_is_critical():
    procs = fake_processes((101, ["python", "scraper.py", "--source", "sushi"]))
    result = scraper(config(process="--source uniswap"), process_iter=procs)
    assert result.status == CRITICAL
    assert result.message == 'no process matches "--source uniswap"'


def test_the_monitor_and_its_parent_never_match_themselves():
    cmdline = ["monitor", "health", "--only", "scraper", "--source", "uniswap"]
    procs = fake_processes((os.getpid(), cmdline), (os.getppid(), ["sh", "-c", " ".join(cmdline)]))
    result = scraper(config(process="--source uniswap"), process_iter=procs)
    assert result.status == CRITICAL


def test_scrapers_checked_together_share_process_table_scans():
    scans = []

    def slow_process_iter(attrs):
        scans.append(attrs)
        time.sleep(0.05)
        return [SimpleNamespace(pid=101, info={"cmdline": ["scraper.py", "--source", "uniswap"]})]

    checks = [Check(f"scraper:s{i}", "scraper", partial(scraper, config(process="uniswap"),
                                                         process_iter=slow_process_iter))
              for i in range(10)]
    run = run_checks(checks)
    assert [r.status for r in run.results] == [OK] * 10
    assert len(scans) <= 3


def test_a_scan_that_started_before_the_question_is_not_reused():
    table = iter([[], [(101, ["scraper.py", "--source", "uniswap"])]])

    def process_iter(attrs):
        return [SimpleNamespace(pid=pid, info={"cmdline": cmdline}) for pid, cmdline in next(table)]

    assert scraper(config(process="uniswap"), process_iter=process_iter).status == CRITICAL
    assert scraper(config(process="uniswap"), process_iter=process_iter).status == OK


def test_real_child_process_is_found_by_its_command_line():
    token = uuid.uuid4().hex
    pattern = rf"time\.sleep\(30\) --source uniswap --run {token}"
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)",
                              "--source", "uniswap", "--run", token])
    try:
        # Popen can return before the kernel shows the new command line (an empty
        # /proc/PID/cmdline was seen under load): the probe is asked once it is there.
        for _ in range(500):
            with open(f"/proc/{child.pid}/cmdline", "rb") as handle:
                if token.encode() in handle.read():
                    break
            time.sleep(0.01)
        result = scraper(config(process=pattern))
        assert result.status == OK, result.message
        assert result.details["process"]["pids"] == [child.pid]
    finally:
        child.kill()
        child.wait()
    assert scraper(config(process=pattern)).status == CRITICAL


# --- process probe: hostile command lines and look-alikes (issue 12, item 10) ---------

NOBODY = 65534
PYTHON = "/usr/bin/python3"  # not the venv's: an unprivileged child must be able to run it


def sleeper(*args, user=None, argv0=None):
    """A real process sleeping 60 s, its command line `argv0 -c CODE args...`, as `user` (uid)."""
    def drop():
        os.setgroups([])
        os.setgid(user)
        os.setuid(user)
    child = subprocess.Popen([argv0 or PYTHON, "-c", "import time; time.sleep(60)", *args],
                             executable=PYTHON, preexec_fn=drop if user is not None else None,
                             stdin=subprocess.DEVNULL)
    # Popen can return before the kernel shows the new command line in /proc.
    last = (args[-1] if args else "import time").encode()
    for _ in range(1000):
        with open(f"/proc/{child.pid}/cmdline", "rb") as fh:
            if fh.read().rstrip(b"\0").endswith(last):
                return child
        time.sleep(0.01)
    child.kill()
    raise AssertionError(f"child {child.pid} never showed its command line")


def scraper_toml(pattern, user=None):
    lines = ["[[scrapers]]", 'name = "uniswap"', f"process = '{pattern}'"]
    if user is not None:
        lines.append(f"process_user = {user!r}".replace("'", '"'))
    return "\n".join(lines) + "\n"


def test_a_1mb_command_line_does_not_stall_the_health_run(tmp_path, run_monitor, envelope):
    token = uuid.uuid4().hex
    # Ten 100 KB arguments (one argument is capped at 128 KB): "scraper.py scraper.py ...".
    # Unbounded, `scraper\.py .*--source` backtracks over the whole megabyte from every
    # "scraper.py " in it: minutes with the GIL held.
    hostile = sleeper(*["scraper.py " * 9000] * 10)
    real = sleeper("scraper.py", "--source", f"uniswap-{token}")
    try:
        proc = run_monitor(["health", "--only", "scraper"], tmp_path,
                           config=scraper_toml(rf"scraper\.py .*--source uniswap-{token}"), timeout=30)
        check = envelope(proc)["checks"]["scraper:uniswap"]
        assert check["status"] == "ok", check
        assert check["details"]["process"]["pids"] == [real.pid]
    finally:
        for child in (hostile, real):
            child.kill()
            child.wait()


def test_only_the_first_4kb_of_a_command_line_is_matched():
    token = uuid.uuid4().hex
    child = sleeper("x" * 5000, f"--source uniswap-{token}")
    try:
        result = scraper(config(process=f"--source uniswap-{token}"))
        assert result.status == CRITICAL, result.message
    finally:
        child.kill()
        child.wait()


def test_a_catastrophic_pattern_is_cut_off_at_its_budget():
    from monitor.checks.scrapers import process_probe

    token = uuid.uuid4().hex
    child = sleeper(token + "a" * 3000 + "!")
    try:
        started = time.monotonic()
        probe = process_probe(f"{token}(a+)+$", budget=0.5)
        # Unbounded this match takes longer than the universe; 20 s is a generous ceiling.
        assert time.monotonic() - started < 20
        assert probe.status == UNKNOWN
        assert probe.message.startswith(f'matching "{token}(a+)+$" took over 0.5 s and found no process')
        assert "set process_user" in probe.message
        assert probe.details["timed_out"] is True
    finally:
        child.kill()
        child.wait()


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="starting a process as nobody needs root")


@needs_root
def test_a_look_alike_started_by_another_user_does_not_count(tmp_path, run_monitor, envelope):
    token = uuid.uuid4().hex
    pattern = rf"scraper\.py .*--source uniswap-{token}"
    spoof = sleeper("--source", f"uniswap-{token}", user=NOBODY, argv0="scraper.py")  # exec -a
    real = None
    try:
        proc = run_monitor(["health", "--only", "scraper"], tmp_path, config=scraper_toml(pattern))
        assert envelope(proc)["checks"]["scraper:uniswap"]["status"] == "ok"  # the spoof fools a bare pattern

        proc = run_monitor(["health", "--only", "scraper"], tmp_path, config=scraper_toml(pattern, "root"))
        check = envelope(proc)["checks"]["scraper:uniswap"]
        assert check["status"] == "critical"
        assert check["message"].startswith("no process of user root matches")

        real = sleeper("--source", f"uniswap-{token}", argv0="scraper.py")
        proc = run_monitor(["health", "--only", "scraper"], tmp_path, config=scraper_toml(pattern, 0))
        check = envelope(proc)["checks"]["scraper:uniswap"]
        assert check["status"] == "ok", check
        assert check["details"]["process"]["pids"] == [real.pid]
        assert check["message"].startswith("1 process of user root matches")
    finally:
        for child in (spoof, real):
            if child:
                child.kill()
                child.wait()


@needs_root
def test_other_users_command_lines_are_not_even_matched_with_process_user():
    from monitor.checks.scrapers import process_probe

    token = uuid.uuid4().hex
    child = sleeper(token + "a" * 3000 + "!", user=NOBODY)
    try:
        assert process_probe(f"{token}(a+)+$", user=0, budget=5).status == CRITICAL
        assert process_probe(f"{token}(a+)+$", user=NOBODY, budget=0.2).status == UNKNOWN
    finally:
        child.kill()
        child.wait()


@pytest.mark.parametrize("value, error", [
    ('"no-such-user-x1"', 'scrapers[0].process_user: no such user "no-such-user-x1" on this system'),
    ('"ro\\u0000ot"', 'scrapers[0].process_user: no such user "ro\\x00ot" on this system'),
    ("-1", "scrapers[0].process_user: expected a uid in [0, 4294967295], got -1"),
    ("1.5", "scrapers[0].process_user: expected a user name or uid, got a number"),
])
def test_a_bad_process_user_is_a_config_error(tmp_path, run_monitor, value, error):
    toml = scraper_toml("scraper") + f"process_user = {value}\n"
    proc = run_monitor(["health", "--only", "scraper"], tmp_path, config=toml)
    assert proc.returncode == 3 and proc.stdout == ""
    assert error in proc.stderr and len(proc.stderr.splitlines()) == 1, proc.stderr


# --- heartbeat probe -----------------------------------------------------------------

def test_fresh_heartbeat_is_ok(tmp_path):
    beat = tmp_path / "uniswap.heartbeat"
    beat.touch()
    result = scraper(config(heartbeat_file=str(beat), heartbeat_max_age=900.0))
    assert result.status == OK
    assert result.details["heartbeat"]["age_seconds"] < 5


def test_stale_heartbeat_is_critical_with_its_age(tmp_path):
    beat = tmp_path / "uniswap.heartbeat"
    beat.touch()
    an_hour_ago = time.time() - 3600
    os.utime(beat, (an_hour_ago, an_hour_ago))
    result = scraper(config(heartbeat_file=str(beat), heartbeat_max_age=900.0))
    assert result.status == CRITICAL
    assert result.message.startswith("heartbeat 1h old (max 15m)")


def test_missing_heartbeat_is_critical(tmp_path):
    path = tmp_path / "never-written"
    result = scraper(config(heartbeat_file=str(path)))
    assert result.status == CRITICAL
    assert result.message == f"heartbeat file {path} is missing"


def test_heartbeat_that_is_a_directory_is_critical(tmp_path):
    result = scraper(config(heartbeat_file=str(tmp_path)))
    assert result.status == CRITICAL
    assert result.message.endswith("is a directory")


def test_heartbeat_from_the_future_is_a_warning(tmp_path):
    beat = tmp_path / "uniswap.heartbeat"
    beat.touch()
    result = scraper(config(heartbeat_file=str(beat)), now=lambda: time.time() - 3600)
    assert result.status == WARNING
    assert "in the future" in result.message


# --- all probes together -------------------------------------------------------------

def test_every_probe_runs_and_the_worst_wins(server, session, tmp_path):
    beat = tmp_path / "uniswap.heartbeat"
    beat.touch()
    url = server.route("/health", reply(json={"status": "ok"}))
    cfg = config(url=url, expect_json={"status": "ok"}, process="--source uniswap", heartbeat_file=str(beat))
    result = scraper(cfg, session, process_iter=fake_processes())
    assert result.status == CRITICAL
    assert result.message == 'no process matches "--source uniswap"'
    assert {name: d["status"] for name, d in result.details.items()} == {
        "http": OK, "process": CRITICAL, "heartbeat": OK}
    assert result.unit == "ms" and result.value is not None


def test_all_failing_probes_are_named(session, tmp_path):
    cfg = config(url=f"http://127.0.0.1:{closed_port()}/", process="nothing-like-this",
                 heartbeat_file=str(tmp_path / "missing"))
    result = scraper(cfg, session, process_iter=fake_processes())
    assert result.message.count(";") == 2
    assert "connection refused" in result.message and "no process" in result.message
    assert "missing" in result.message


def test_entry_without_any_probe_is_unknown():
    assert scraper(config()).status == UNKNOWN


# --- many at once --------------------------------------------------------------------

def load_bench_server():
    spec = importlib.util.spec_from_file_location("slow_server", ROOT / "bench" / "slow_server.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_twenty_scrapers_share_a_session_and_answer_together(session):
    server, port = load_bench_server().start(delay=0.2)
    try:
        url = f"http://127.0.0.1:{port}/health"
        checks = []
        for i in range(20):
            cfg = config(name=f"s{i}", url=url, expect_json={"status": "ok"}, timeout=2.0)
            checks.append(Check(f"scraper:s{i}", "scraper", partial(scraper, cfg, session),
                                timeout=cfg["timeout"] + 0.5, on_timeout=CRITICAL))
        run, took = elapsed(run_checks, checks)
    finally:
        server.shutdown()
        server.server_close()
    assert [r.status for r in run.results] == [OK] * 20, [r.message for r in run.results]
    assert all(r.value >= 200 for r in run.results)
    assert took < 3  # generous for a busy machine; twenty 0.2 s answers one after another take 4 s


def test_bench_slow_server_prints_its_port_and_answers():
    server = subprocess.Popen([sys.executable, str(ROOT / "bench" / "slow_server.py"), "--port", "0",
                               "--delay", "0.05"], stdout=subprocess.PIPE, text=True)
    try:
        port = int(server.stdout.readline())
        resp = http.get(None, f"http://127.0.0.1:{port}/health", 2.0)
        assert resp.status == 200 and resp.json() == {"status": "ok"}
    finally:
        server.terminate()
        server.wait()


# --- the alert headline (issue 11, item 9) --------------------------------------------------

def headline_of(result, check_id="scraper:uniswap") -> str:
    """The first line of the alert this result raises, as the operator reads it in Telegram."""
    from monitor.alerts import messages
    from monitor.alerts.state import Alert
    from monitor.results import with_identity
    from monitor.alerts.telegram import html_to_plain

    result = with_identity(result, check_id, "scraper", 1.0)
    plain = html_to_plain(messages.compose([Alert(check_id, result.status, result, 1e9, 1e9)], "h", "prod", 1e9))
    return plain.splitlines()[1]


def test_a_refused_connection_alerts_without_the_latency_threshold(session):
    result = scraper(config(url=f"http://127.0.0.1:{closed_port()}/health"), session)
    assert result.status == CRITICAL
    assert headline_of(result) == "• scraper:uniswap"  # no "— critical at 3000": no number failed


def test_a_503_answered_in_time_alerts_without_numbers(server, session):
    result = scraper(config(url=server.route("/health", reply(503))), session)
    assert result.status == CRITICAL and result.value < 1000
    assert headline_of(result) == "• scraper:uniswap"


def test_a_slow_answer_alerts_with_its_latency_and_the_threshold_it_crossed_in_seconds(server, session):
    url = server.route("/slow", reply(json={"status": "ok"}, delay=1.2))
    result = scraper(config(url=url, latency_ms=Threshold(500, 1000)), session)
    assert result.status == CRITICAL
    # ("1.2 s" on a quiet machine; a busy one may add a little.)
    assert re.fullmatch(r"• scraper:uniswap — latency \d+(\.\d+)? s > 1 s", headline_of(result)), headline_of(result)


def test_a_warning_latency_is_shown_against_the_warning_threshold_in_ms(server, session):
    url = server.route("/slow", reply(json={"status": "ok"}, delay=0.3))
    result = scraper(config(url=url, latency_ms=Threshold(200, 5000)), session)
    assert result.status == WARNING
    assert re.fullmatch(r"• scraper:uniswap — latency \d+(\.\d+)? (ms|s) > 200 ms", headline_of(result))
