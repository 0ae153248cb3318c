"""monitor's own outbound calls (heartbeat pings, the Bot API's reads, Alertmanager posts) through
the proxy the environment names, as requests and curl read it: a host that reaches the
Internet only through a proxy still pings its dead man's switch and reads its chat."""

import base64
import datetime as dt
import json
import socket
import ssl
import threading

import pytest

from monitor import rawhttp
from tests.loopback import reply, serve
from tests.tls_certs import Authority, DAY, https_server, https_url
from tests.test_heartbeat import _heartbeat, watcher  # noqa: F401 (the fixture)


class ForwardProxy:
    """An http:// proxy on 127.0.0.1: CONNECT tunnels, and absolute-form requests forwarded in
    origin form. `seen` keeps each request's head; `refuse` answers CONNECT with that status line."""

    def __init__(self, refuse: str = ""):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port, self.refuse, self.seen = self.listener.getsockname()[1], refuse, []
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, userinfo: str = "") -> str:
        return f"http://{userinfo}127.0.0.1:{self.port}"

    def _accept(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        with conn:
            head = b""
            while b"\r\n\r\n" not in head:
                data = conn.recv(4096)
                if not data:
                    return
                head += data
            head, _, rest = head.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            self.seen.append(lines)
            method, target, version = lines[0].split(" ")
            if method == "CONNECT":
                if self.refuse:
                    conn.sendall(f"HTTP/1.1 {self.refuse}\r\nContent-Length: 0\r\n\r\n".encode())
                    return
                host, port = target.rsplit(":", 1)
                upstream = socket.create_connection((host, int(port)))
                conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            else:
                address = target.split("://", 1)[1]
                authority, _, path = address.partition("/")
                host, port = authority.rsplit(":", 1)
                upstream = socket.create_connection((host, int(port)))
                upstream.sendall(" ".join([method, "/" + path, version]).encode() + b"\r\n"
                                 + "\r\n".join(lines[1:]).encode("latin-1") + b"\r\n\r\n" + rest)
            with upstream:
                threading.Thread(target=self._pipe, args=(upstream, conn), daemon=True).start()
                self._pipe(conn, upstream)

    @staticmethod
    def _pipe(source, sink):
        try:
            while data := source.recv(65536):
                sink.sendall(data)
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def stop(self):
        self.listener.close()


@pytest.fixture
def proxy():
    made = []

    def start(**kwargs):
        made.append(ForwardProxy(**kwargs))
        return made[-1]
    yield start
    for one in made:
        one.stop()


def _proxied(monkeypatch, **env):
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)


# --- which proxy, as urllib and requests read the environment ---------------------------------

@pytest.mark.parametrize("env, url, expected", [
    ({}, "https://api.telegram.org/x", None),
    ({"HTTPS_PROXY": "http://proxy:3128"}, "https://api.telegram.org/x", ("proxy", 3128, None)),
    ({"HTTPS_PROXY": "proxy:3128"}, "https://api.telegram.org/x", ("proxy", 3128, None)),  # no scheme: http
    ({"HTTPS_PROXY": "http://proxy"}, "https://api.telegram.org/x", ("proxy", 80, None)),
    ({"https_proxy": "http://low:1", "HTTPS_PROXY": "http://up:2"}, "https://a.org/", ("low", 1, None)),
    ({"https_proxy": "", "HTTPS_PROXY": "http://up:2"}, "https://a.org/", None),  # lower case wins, even empty
    ({"HTTPS_PROXY": "http://proxy:3128"}, "http://hc.example/ping", None),  # http URLs: http_proxy
    ({"HTTP_PROXY": "http://p:8080"}, "http://hc.example/ping", ("p", 8080, None)),
    ({"HTTP_PROXY": "http://p:8080", "REQUEST_METHOD": "GET"}, "http://hc.example/ping", None),  # httpoxy
    ({"ALL_PROXY": "http://all:9"}, "https://a.org/", ("all", 9, None)),
    ({"HTTPS_PROXY": "http://p:1", "NO_PROXY": "a.org"}, "https://api.a.org/x", None),
    ({"HTTPS_PROXY": "http://p:1", "NO_PROXY": ".a.org"}, "https://a.org/x", None),
    ({"HTTPS_PROXY": "http://p:1", "NO_PROXY": "b.org, a.org:8443"}, "https://a.org:8443/x", None),
    ({"HTTPS_PROXY": "http://p:1", "NO_PROXY": "a.org:8443"}, "https://a.org/x", ("p", 1, None)),
    ({"HTTPS_PROXY": "http://p:1", "NO_PROXY": "ba.org"}, "https://a.org/x", ("p", 1, None)),
    ({"HTTP_PROXY": "http://p:1", "NO_PROXY": "10.0.0.0/8"}, "http://10.1.2.3:9093/", None),
    ({"HTTP_PROXY": "http://p:1", "NO_PROXY": "10.0.0.0/8"}, "http://11.1.2.3:9093/", ("p", 1, None)),
    ({"HTTP_PROXY": "http://p:1", "NO_PROXY": "*"}, "http://x/", None),
    ({"HTTP_PROXY": "http://p:1", "NO_PROXY": "::1"}, "http://[::1]:9/", None),
    ({"HTTPS_PROXY": "http://us%40er:p%3Ass@p:1"}, "https://a.org/",
     ("p", 1, "Basic " + base64.b64encode(b"us@er:p:ss").decode())),
])
def test_the_proxy_is_read_from_the_environment_as_requests_reads_it(env, url, expected):
    scheme, host, port, _, _ = rawhttp.split_url(url)
    found = rawhttp.proxy_for(scheme, host, port, env)
    assert (found and (found.host, found.port, found.auth)) == expected


def test_a_proxy_monitor_cannot_speak_is_a_clear_error_without_its_credentials():
    with pytest.raises(ValueError, match="socks5") as caught:
        rawhttp.proxy_for("https", "a.org", 443, {"HTTPS_PROXY": "socks5://user:hunter2@p:1080"})
    assert "hunter2" not in str(caught.value)


# --- through a real proxy ------------------------------------------------------------------------

def test_an_http_url_goes_to_the_proxy_as_an_absolute_request_with_its_credentials(monkeypatch, proxy):
    relay = proxy()
    with serve() as server:
        url = server.route("/ping/abc", reply(200, "OK"))
        _proxied(monkeypatch, HTTP_PROXY=relay.url("mon:s3cret@"))
        answer = rawhttp.request("GET", url, timeout=20)
    assert (answer.status, answer.body) == (200, b"OK")
    [lines] = relay.seen
    assert lines[0] == f"GET {url} HTTP/1.1"
    assert f"Proxy-Authorization: Basic {base64.b64encode(b'mon:s3cret').decode()}" in lines
    assert [path for path, _ in server.received] == ["/ping/abc"]


def test_an_https_url_goes_through_a_connect_tunnel_and_still_checks_the_certificate(
        tmp_path, monkeypatch, proxy):
    ca = Authority(tmp_path)
    now = dt.datetime.now(dt.timezone.utc)
    cert, key, _ = ca.leaf("api", now - DAY, now + 30 * DAY)
    relay = proxy()
    with https_server(cert, key) as server:
        server.route("/bot1:x/getUpdates", reply(200, json={"ok": True, "result": []}))
        url = https_url(server, "/bot1:x/getUpdates")
        _proxied(monkeypatch, HTTPS_PROXY=relay.url())
        trusted = [ssl.create_default_context(cafile=str(ca.path))]
        answer = rawhttp.request("GET", url, timeout=20, tls=trusted)
        assert json.loads(answer.body) == {"ok": True, "result": []}
        assert relay.seen[0][0] == f"CONNECT 127.0.0.1:{server.port} HTTP/1.1"  # the path stays inside TLS
        with pytest.raises(ssl.SSLCertVerificationError):  # the tunnel changes nothing to the trust
            rawhttp.request("GET", url, timeout=20, tls=[ssl.create_default_context()])


def test_a_proxy_that_refuses_the_tunnel_is_named_and_the_url_is_not(monkeypatch, proxy):
    relay = proxy(refuse="407 Proxy Authentication Required")
    _proxied(monkeypatch, HTTPS_PROXY=relay.url("mon:s3cret@"))
    with pytest.raises(ConnectionError) as caught:
        rawhttp.request("GET", "https://api.telegram.org/bot123:SECRET/getUpdates", timeout=20)
    said = str(caught.value)
    assert f"127.0.0.1:{relay.port}" in said and "407 Proxy Authentication Required" in said
    assert "SECRET" not in said and "s3cret" not in said


def test_no_proxy_sends_a_call_direct(monkeypatch, proxy):
    relay = proxy()
    with serve() as server:
        url = server.route("/ping", reply(200, "OK"))
        _proxied(monkeypatch, HTTP_PROXY=relay.url(), NO_PROXY="localhost,127.0.0.1")
        assert rawhttp.request("GET", url, timeout=20).status == 200
    assert relay.seen == []


def test_health_pings_its_heartbeat_through_the_proxy_of_its_environment(
        tmp_path, run_monitor, verdict_config, watcher, proxy):
    relay = proxy()
    url = watcher.url("/ping/abc")
    proc = run_monitor(["health"], tmp_path, config=verdict_config("ok") + _heartbeat(url),
                       env={"http_proxy": relay.url()})
    assert proc.returncode == 0, proc.stderr
    assert [lines[0] for lines in relay.seen] == [f"GET {url}/start HTTP/1.1", f"POST {url}/0 HTTP/1.1"]
    assert [(m, p) for m, p, _, _ in watcher.received] == [("GET", "/ping/abc/start"), ("POST", "/ping/abc/0")]
