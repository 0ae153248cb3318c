"""Heartbeat pings (issue 11, item 6): a watcher outside the host hears from every run.

A real HTTP server on 127.0.0.1 stands in for healthchecks.io: it records every
request and answers per path (200, an error, never, or one byte at a time).
"""

import json
import logging
import shutil
import ssl
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from monitor.fleet import heartbeat
from monitor.results import Result
from tests.conftest import clean_env, seed_cpu_baseline
from tests.loopback import closed_port

PING_KEY = "hc-ping-key-0123456789abcdef"


class _Watcher(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self._record()

    def do_POST(self):
        self._record()

    def _record(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        server = self.server
        with server.lock:
            server.received.append((self.command, self.path, body, dict(self.headers.items())))
        how = server.answers.get(self.path.rsplit("/", 1)[-1], "ok")
        try:
            if how == "hang":  # read the request, never answer
                server.closing.wait(60)
            elif how == "trickle":  # a status line that never ends, one byte every 0.2 s
                while not server.closing.wait(0.2):
                    self.wfile.write(b"H")
                    self.wfile.flush()
            else:
                status = 200 if how == "ok" else int(how)
                self.wfile.write(f"HTTP/1.1 {status} X\r\nContent-Length: 2\r\n\r\nOK".encode())
        except OSError:
            pass
        self.close_connection = True

    def log_message(self, format, *args):
        pass


class WatcherServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Watcher)
        self.received, self.answers = [], {}
        self.lock, self.closing = threading.Lock(), threading.Event()

    def url(self, path):
        return f"http://127.0.0.1:{self.server_address[1]}{path}"

    def handle_error(self, request, client_address):
        pass


@pytest.fixture
def watcher():
    server = WatcherServer()
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield server
    server.closing.set()
    server.shutdown()
    server.server_close()


def _heartbeat(url, command="health"):
    return f'[heartbeat]\n"{command}" = "{url}"\n'


def _failures(tmp_path, name="health"):
    path = tmp_path / "logs" / f"{name}.log"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    return [r for r in records if r.get("event") == "heartbeat_failed"]


# --- the protocol -----------------------------------------------------------------------

@pytest.mark.parametrize("verdict, code", [("ok", 0), ("warning", 1), ("critical", 2)])
def test_health_pings_start_then_its_exit_code_with_the_one_line_summary(
        tmp_path, run_monitor, verdict_config, envelope, watcher, verdict, code):
    config = verdict_config(verdict) + _heartbeat(watcher.url("/ping/abc"))
    proc = run_monitor(["health", "--format", "json"], tmp_path, config=config)
    assert proc.returncode == code, proc.stderr
    assert envelope(proc)["overall_status"] == verdict  # stdout is untouched by the pings
    assert [(m, p) for m, p, _, _ in watcher.received] == [("GET", "/ping/abc/start"), ("POST", f"/ping/abc/{code}")]
    body = watcher.received[1][2].decode()
    assert "\n" not in body and len(body.encode()) <= 10_000
    if verdict == "ok":
        assert body == "health ok: all 8 checks ok"
    else:
        assert body.startswith(f"health {verdict}: 1 of 8 checks not ok: disk:/ {verdict} ")
        assert "%" in body
    assert not (tmp_path / "logs" / "health.log").read_text().count("heartbeat_failed")


def test_backup_check_pings_its_own_url_and_health_is_not_pinged(tmp_path, run_monitor, watcher):
    config = (_heartbeat(watcher.url("/b"), "backup-check")
              + f'daily-report = "{watcher.url("/d")}"\n')
    proc = run_monitor(["backup-check", "--format", "json"], tmp_path, config=config)
    assert proc.returncode == 0, proc.stderr
    assert [(m, p) for m, p, _, _ in watcher.received] == [("GET", "/b/start"), ("POST", "/b/0")]
    assert watcher.received[1][2] == b"backup-check ok: all 0 checks ok"
    watcher.received.clear()
    run_monitor(["health", "--format", "json"], tmp_path, config=config)
    assert watcher.received == []


def test_a_query_string_stays_at_the_end_of_the_ping_url(tmp_path, run_monitor, verdict_config, watcher):
    config = verdict_config("ok") + _heartbeat(watcher.url("/abc/?rid=7"))
    assert run_monitor(["health", "--format", "json"], tmp_path, config=config).returncode == 0
    assert [p for _, p, _, _ in watcher.received] == ["/abc/start?rid=7", "/abc/0?rid=7"]


def test_dry_run_sends_no_ping(tmp_path, run_monitor, verdict_config, watcher):
    config = verdict_config("ok") + _heartbeat(watcher.url("/abc"))
    assert run_monitor(["health", "--dry-run", "--format", "json"], tmp_path, config=config).returncode == 0
    assert watcher.received == []


def test_a_run_that_cannot_take_the_lock_pings_exit_code_3_naming_the_holder(tmp_path, run_monitor,
                                                                           verdict_config, watcher):
    from monitor import state

    config = verdict_config("ok") + _heartbeat(watcher.url("/abc"))
    (tmp_path / "state").mkdir()
    lock = state.RunLock(str(tmp_path / "state"), "health", 0)
    lock.acquire()
    try:
        proc = run_monitor(["health", "--format", "json"], tmp_path, config=config,
                           env={"MONITOR_LOCK_WAIT": "0"})
    finally:
        lock.release()
    assert proc.returncode == 3
    assert [p for _, p, _, _ in watcher.received] == ["/abc/start", "/abc/3"]
    assert watcher.received[1][2].startswith(b"health unknown: ") and b"PID" in watcher.received[1][2]


# --- a watcher that fails never changes the run -------------------------------------------

def test_a_watcher_that_refuses_or_errs_is_logged_and_changes_no_exit_code(tmp_path, run_monitor,
                                                                          verdict_config, envelope, watcher):
    refused = f"http://127.0.0.1:{closed_port()}/abc"
    proc = run_monitor(["health", "--format", "json"], tmp_path,
                       config=verdict_config("warning") + _heartbeat(refused))
    assert proc.returncode == 1 and envelope(proc)["overall_status"] == "warning"
    assert proc.stderr == ""  # logged, not mailed by cron every 5 minutes
    failed = _failures(tmp_path)
    assert [f["ping"] for f in failed] == ["start", "1"]
    assert all("refused" in f["message"].lower() for f in failed)

    watcher.answers["0"] = "500"
    proc = run_monitor(["health", "--format", "json"], tmp_path,
                       config=verdict_config("ok") + _heartbeat(watcher.url("/abc")))
    assert proc.returncode == 0
    assert [(f["ping"], f["message"].endswith("failed: HTTP 500")) for f in _failures(tmp_path)][2:] == [("0", True)]


def test_a_watcher_that_hangs_then_trickles_costs_each_ping_5_s_at_most_and_never_delays_the_checks(
        tmp_path, run_monitor, verdict_config, envelope, watcher):
    watcher.answers.update({"start": "hang", "0": "trickle"})
    config = verdict_config("ok") + _heartbeat(watcher.url("/abc"))
    started = time.monotonic()
    # A per-read timeout would never end the trickle: the 60 s cap of run_monitor would.
    proc = run_monitor(["health", "--format", "json"], tmp_path, config=config, timeout=60)
    took = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr
    data = envelope(proc)
    # The checks did not wait for /start (sent in a thread): the run's own duration
    # is far below one ping deadline (a host-only run takes ~0.1 s; generous bound).
    assert data["duration_ms"] < 4000
    # Two pings of at most 5 s each, and process start-up; generous for a busy CI machine.
    assert took < 20
    failed = _failures(tmp_path)
    assert [(f["ping"], f["message"].split("failed: ")[1]) for f in failed] == [
        ("start", "no answer within 5s"), ("0", "no answer within 5s")]
    assert [p for _, p, _, _ in watcher.received] == ["/abc/start", "/abc/0"]


def test_the_deadline_is_total_not_per_read(watcher):
    """A peer sending a byte every 0.2 s is cut when the clock passes the deadline."""
    watcher.answers["0"] = "trickle"
    ticks = iter(range(0, 1000, 1))  # each look at the clock: one second later

    with pytest.raises(TimeoutError, match="no answer within 5s"):
        heartbeat.send("POST", watcher.url("/abc/0"), b"x", timeout=5, clock=lambda: next(ticks))


# --- ${NAME} placeholders, masking -------------------------------------------------------------

def test_a_ping_key_placeholder_is_filled_from_the_environment_and_never_shown(tmp_path, run_monitor,
                                                                               verdict_config, watcher):
    watcher.answers["2"] = "503"
    config = verdict_config("critical") + _heartbeat(watcher.url("/${HC_PING_KEY}/health"))
    env = {"HC_PING_KEY": PING_KEY}
    proc = run_monitor(["health", "--format", "json", "-v"], tmp_path, config=config, env=env)
    assert proc.returncode == 2
    assert [p for _, p, _, _ in watcher.received] == [f"/{PING_KEY}/health/start", f"/{PING_KEY}/health/2"]
    assert "heartbeat health: 2 ping to http://127.0.0.1:" in proc.stderr  # -v: the log on stderr
    check = run_monitor(["config", "check", "--format", "json"], tmp_path, config=config, env=env)
    assert json.loads(check.stdout)["heartbeat"]["health"] == watcher.url("/${HC_PING_KEY}/health")
    text = run_monitor(["config", "check", "--format", "text"], tmp_path, config=config, env=env)
    assert "${HC_PING_KEY}" in text.stdout
    everything = proc.stdout + proc.stderr + check.stdout + check.stderr + text.stdout + text.stderr
    for path in (tmp_path / "logs").rglob("*"):
        everything += path.read_text() if path.is_file() else ""
    for path in (tmp_path / "state").rglob("*"):
        everything += path.read_text(errors="replace") if path.is_file() else ""
    assert PING_KEY not in everything
    assert "***" in (tmp_path / "logs" / "health.log").read_text()


def test_a_literal_ping_url_is_masked_in_the_log_and_in_config_check(tmp_path, run_monitor, verdict_config):
    secret_path = "/0f9e8d7c-6b5a-4321-9876-abcdef012345"
    url = f"http://127.0.0.1:{closed_port()}{secret_path}"
    config = verdict_config("ok") + _heartbeat(url)
    proc = run_monitor(["health", "--format", "json", "-v"], tmp_path, config=config)
    assert proc.returncode == 0
    logged = (tmp_path / "logs" / "health.log").read_text()
    assert "heartbeat_failed" in logged
    check = run_monitor(["config", "check", "--format", "json"], tmp_path, config=config)
    assert json.loads(check.stdout)["heartbeat"]["health"] == url.replace(secret_path, "/***")
    assert secret_path not in logged + proc.stderr + proc.stdout + check.stdout


@pytest.mark.parametrize("section", [
    '[heartbeat]\nhealth = "https://hc-ping.com/${HC_PING_KEY}"\n',
    '[[scrapers]]\nname = "s"\nurl = "http://127.0.0.1:9/${HC_PING_KEY}/health"\n',
])
def test_an_unset_placeholder_is_one_config_error_naming_the_key_and_the_variable(tmp_path, run_monitor, section):
    proc = run_monitor(["health"], tmp_path, config=section)
    assert proc.returncode == 3
    key = "heartbeat.health" if "heartbeat" in section else "scrapers[0].url"
    assert proc.stderr.splitlines() == [
        f"config error: {key}: environment variable HC_PING_KEY (in ${{HC_PING_KEY}}) is not set"]
    assert not (tmp_path / "logs").exists()


# --- cost ----------------------------------------------------------------------------------

def test_a_host_only_run_with_a_heartbeat_imports_no_http_stack(tmp_path, watcher, verdict_config):
    (tmp_path / "monitor.toml").write_text(verdict_config("ok") + _heartbeat(watcher.url("/abc")))
    seed_cpu_baseline(tmp_path / "state")
    code = (
        "import json, sys\n"
        "from monitor.cli import main\n"
        "code = main(['health', '--format', 'json', '--quiet'])\n"
        # `socket` too: its ~4 ms of imports in the /start thread held the GIL the checks
        # needed (issue 14: the heartbeat row of `make bench`); the C core `_socket` does.
        "heavy = ['requests', 'urllib3', 'http.client', 'email.parser', 'hvac', 'ssl', 'urllib.parse',\n"
        "         'socket', 'selectors']\n"
        "print(json.dumps({'code': code, 'loaded': [m for m in heavy if m in sys.modules]}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=clean_env(), capture_output=True,
                          text=True, timeout=30)
    result = json.loads(proc.stdout.splitlines()[-1])
    assert result == {"code": 0, "loaded": []}
    assert [p for _, p, _, _ in watcher.received] == ["/abc/start", "/abc/0"]


class _Warnings(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture
def warnings():
    handler, logger = _Warnings(), logging.getLogger("monitor")
    logger.addHandler(handler)
    yield handler.messages
    logger.removeHandler(handler)


def test_a_run_looks_the_watcher_up_once_and_sends_the_end_ping_without_a_thread(watcher, monkeypatch,
                                                                                 warnings):
    lookups, resolve = [], heartbeat._resolve
    monkeypatch.setattr(heartbeat, "_resolve", lambda host, port: lookups.append(host) or resolve(host, port))
    beat = heartbeat.Heartbeat("health", watcher.url("/abc"))
    beat.start.wait()
    started = threading.Thread.start
    threads = []
    monkeypatch.setattr(threading.Thread, "start", lambda self: threads.append(self.name) or started(self))
    beat.end(0, "health ok: all 8 checks ok")
    assert [p for _, p, _, _ in watcher.received] == ["/abc/start", "/abc/0"]
    assert lookups == ["127.0.0.1"]  # /start's answer serves the end ping
    # every step of the end ping has a timeout: no thread to start and join (the watcher's are its own)
    assert [name for name in threads if name == "heartbeat"] == []
    assert warnings == []


def test_when_the_start_lookup_hangs_the_end_ping_looks_up_again_in_a_thread_within_its_deadline(
        watcher, monkeypatch, warnings):
    now = [1000.0]  # an injected clock: /start's deadline passes without waiting 5 s
    hung, lookups, resolve = threading.Event(), [], heartbeat._resolve

    def lookup(host, port):
        lookups.append(host)
        if len(lookups) == 1:  # /start: a DNS server that never answers
            hung.wait(30)
            raise OSError("given up")
        return resolve(host, port)

    monkeypatch.setattr(heartbeat, "_resolve", lookup)
    try:
        beat = heartbeat.Heartbeat("health", watcher.url("/abc"), clock=lambda: now[0])
        now[0] += heartbeat.DEADLINE + 1
        beat.end(2, "health critical")
    finally:
        hung.set()
    assert [p for _, p, _, _ in watcher.received] == ["/abc/2"]
    assert lookups == ["127.0.0.1", "127.0.0.1"]
    assert len(warnings) == 1 and warnings[0].endswith("start ping to http://127.0.0.1:"
                                                       f"{watcher.server_address[1]}/*** failed: no answer within 5s")


@pytest.mark.skipif(not shutil.which("openssl"), reason="needs the openssl command")
def test_an_https_watcher_gets_both_pings_and_the_ca_bundle_is_loaded_once(tmp_path, monkeypatch, warnings):
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True, timeout=30)
    server = WatcherServer()
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the trust store of ssl.create_default_context
    monkeypatch.setattr(heartbeat, "_tls", [])
    made, create = [], ssl.create_default_context
    monkeypatch.setattr(ssl, "create_default_context", lambda *a, **k: made.append(1) or create(*a, **k))
    try:
        beat = heartbeat.Heartbeat("health", server.url("/abc").replace("http:", "https:"))
        beat.end(0, "health ok: all 8 checks ok")
    finally:
        server.shutdown()
        server.server_close()
    assert warnings == []
    assert [p for _, p, _, _ in server.received] == ["/abc/start", "/abc/0"]
    assert made == [1]  # ~25 ms of CA loading, in the /start thread, not again after stdout


@pytest.mark.parametrize("url, parts", [
    ("http://127.0.0.1:8000/ping/abc?rid=1", ("http", "127.0.0.1", 8000, "127.0.0.1:8000", "/ping/abc?rid=1")),
    ("https://hc-ping.com/uuid", ("https", "hc-ping.com", 443, "hc-ping.com", "/uuid")),
    ("HTTP://user:key@[::1]:99/x/start", ("http", "::1", 99, "[::1]:99", "/x/start")),
    ("http://h?x=1", ("http", "h", 80, "h", "/?x=1")),
    ("http://h/p#fragment", ("http", "h", 80, "h", "/p")),
])
def test_ping_urls_are_split_like_urllib_would(url, parts):
    from urllib.parse import urlsplit

    assert heartbeat.split_url(url) == parts
    reference = urlsplit(url)
    assert (parts[1], parts[2]) == (reference.hostname, reference.port or {"http": 80, "https": 443}[parts[0]])


@pytest.mark.parametrize("url", ["ftp://h/x", "http:///x", "http://h:99999/x", "http://h:x/"])
def test_a_ping_url_that_is_not_http_is_refused(url):
    with pytest.raises(ValueError):
        heartbeat.split_url(url)


# --- the summary ----------------------------------------------------------------------------

def test_the_summary_is_one_line_clipped_to_10_kb_without_splitting_a_character():
    results = [Result("critical", f"line one\nline two é{i} " + "€" * 500, value=99.5, unit="%", id=f"disk:/d{i}")
               for i in range(40)] + [Result("ok", "fine", id="cpu")]
    text = heartbeat.summary("health", "critical", results)
    assert text.startswith("health critical: 40 of 41 checks not ok: disk:/d0 critical 99.5%: line one")
    body = heartbeat.clip(text)
    assert len(body) <= 10_000 and body.endswith(b"...")
    decoded = body.decode("utf-8")  # raises if a character was cut in half
    assert "\n" not in decoded
    assert heartbeat.clip("short\nsummary") == b"short summary"
