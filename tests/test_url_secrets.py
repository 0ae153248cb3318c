"""Secrets in URLs (issue 12, item 6): an Etherscan-style `?apikey=` and a Pushgateway
password come from `${NAME}` placeholders, reach the real peers, and never show in
stdout, stderr (with -vv: urllib3's request lines), logs or state."""

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.conftest import VERDICT_CONFIGS, monitor_json
from tests.loopback import reply, server  # noqa: F401 (fixture)

ETHERSCAN_KEY = "QK7W9TZ3ETHERSCANKEY0123456789ABCD"  # 34 characters, as Etherscan's
SHORT_KEY = "Zq7-k3"  # under redact.MIN_LENGTH: never registered, masked by its shape
PUSH_PASSWORD = "pw-4711"


def _everything_written(cwd: Path, proc) -> str:
    texts = [proc.stdout, proc.stderr]
    for path in cwd.rglob("*"):
        if path.is_file() and path.name != "test.toml":
            texts.append(path.read_bytes().decode("utf-8", "replace"))
    return "\n".join(texts)


class _Pushgateway(BaseHTTPRequestHandler):
    """Records each push's Authorization header and answers 500, so the failure is logged."""

    def do_PUT(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.auth.append(self.headers.get("Authorization"))
        self.send_response(500)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format, *args):
        pass


@pytest.fixture
def pushgateway():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Pushgateway)
    srv.auth = []
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


def test_query_keys_and_url_passwords_from_placeholders_never_leak_with_vv(tmp_path, run_monitor, server,
                                                                          pushgateway):
    api = server.route("/api", reply(json={"status": "1", "result": {"remaining": 90000}}))
    port = pushgateway.server_address[1]
    gateway = f"http://monitor:${{PUSH_PASSWORD}}@127.0.0.1:{port}"
    config = VERDICT_CONFIGS["ok"] + f"""
[[quotas]]
name = "etherscan"
url = "{api}?chainid=1&module=account&apikey=${{ETHERSCAN_API_KEY}}"
remaining_json = "result.remaining"
limit = 100000
timeout = "5s"

[[quotas]]
name = "short"
url = "{api}?apikey=${{SHORT_KEY}}"
remaining_json = "result.remaining"
limit = 100000
timeout = "5s"

[prometheus]
pushgateway_url = "{gateway}"
"""
    env = {"ETHERSCAN_API_KEY": ETHERSCAN_KEY, "SHORT_KEY": SHORT_KEY, "PUSH_PASSWORD": PUSH_PASSWORD}
    proc = run_monitor(["health", "--format", "json", "-vv"], tmp_path, env=env, config=config)
    assert proc.returncode == 0, proc.stderr
    checks = monitor_json(proc.stdout)["checks"]
    assert checks["quota:etherscan"]["status"] == checks["quota:short"]["status"] == "ok"
    # The keys were really used: the provider got them in the query string.
    paths = [path for path, _ in server.received if path.startswith("/api")]
    assert any(p.endswith(f"&apikey={ETHERSCAN_KEY}") for p in paths) and f"/api?apikey={SHORT_KEY}" in paths
    # -vv printed the request lines (the probes' own client's, urllib3's before issue 14), masked
    assert "probes.http" in proc.stderr and "apikey=***" in proc.stderr
    written = _everything_written(tmp_path, proc)
    for secret in (ETHERSCAN_KEY, SHORT_KEY, PUSH_PASSWORD):
        assert secret not in written, secret
    log = (tmp_path / "logs" / "health.log").read_text()
    [pushed] = [json.loads(line) for line in log.splitlines() if "pushgateway_failed" in line]
    assert f"the Pushgateway http://***@127.0.0.1:{port}:" in pushed["message"], pushed
    # The password went as basic auth, not in the URL.
    assert pushgateway.auth == ["Basic " + base64.b64encode(f"monitor:{PUSH_PASSWORD}".encode()).decode()]

    check = run_monitor(["config", "check", "--format", "json"], tmp_path, env=env, config=config)
    assert check.returncode == 0, check.stderr
    assert "apikey=${ETHERSCAN_API_KEY}" in check.stdout and "chainid=***" in check.stdout
    assert not any(secret in check.stdout + check.stderr for secret in (ETHERSCAN_KEY, SHORT_KEY, PUSH_PASSWORD))


def test_a_literal_api_key_in_a_query_string_is_one_clear_error(tmp_path, run_monitor):
    config = ('[[quotas]]\nname = "etherscan"\n'
              f'url = "https://api.etherscan.io/v2/api?chainid=1&apikey={ETHERSCAN_KEY}"\n'
              'remaining_json = "result.remaining"\nlimit = 100000\n')
    for args in (["config", "check"], ["health", "-vv"]):
        proc = run_monitor(args, tmp_path, config=config)
        assert proc.returncode == 3, proc
        assert proc.stdout == "" and "Traceback" not in proc.stderr
        assert ETHERSCAN_KEY not in proc.stderr
        assert 'quotas[0].url: the URL holds a literal value for the query parameter "apikey"' in proc.stderr
