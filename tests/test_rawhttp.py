"""The shared socket HTTP client (monitor/rawhttp.py) against real loopback peers.

Each peer is a plain TCP server that reads the request and then writes exactly the
bytes a test scripts, in the pieces it scripts, and holds the connection open until
the test ends: an answer is read to its end (Content-Length, the last chunk), not to
a close that never comes.
"""

import socket
import threading
import time

import pytest

from monitor import rawhttp
from tests.loopback import closed_port

SECRET = "123456789:AAsecretSECRETsecretSECRET"


class Peer:
    """One connection on 127.0.0.1 (or ::1): read the request, then run `script(conn)`."""

    def __init__(self, script, host="127.0.0.1"):
        self.listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        self.listener.bind((host, 0))
        self.listener.listen(1)
        self.script, self.requests = script, []
        self.closing, self.done = threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def url(self, path="/x"):
        host, port = self.listener.getsockname()[:2]
        return f"http://{'[' + host + ']' if ':' in host else host}:{port}{path}"

    def _serve(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:  # stopped
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn):
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(4096)
            head, _, body = data.partition(b"\r\n\r\n")
            length = [int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:")]
            while len(body) < (length[0] if length else 0):
                body += conn.recv(4096)
            self.requests.append((head.decode(), body))
            try:
                self.script(conn)
            except OSError:  # the client hung up, as it should once it has what it reads
                pass
            self.done.set()
            self.closing.wait(60)

    def stop(self):
        self.closing.set()
        self.listener.close()


@pytest.fixture
def peer():
    peers = []

    def write(pieces, conn):
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for piece in pieces:
            conn.sendall(piece)
            time.sleep(0.02)  # most likely a read of its own (nothing is timed)

    def start(*pieces, script=None, host="127.0.0.1"):
        made = Peer(script or (lambda conn: write(pieces, conn)), host)
        peers.append(made)
        return made

    yield start
    for made in peers:
        made.stop()


def fields(reply: rawhttp.Reply) -> tuple:
    return reply.status, reply.headers, reply.body, reply.too_big


def ticking(step=1.0):
    """A clock that moves `step` seconds each time it is read: deadlines pass without waiting."""
    now = [0.0]

    def clock():
        now[0] += step
        return now[0]
    return clock


# Timeouts are real seconds a correct client never waits: a client that missed the end of
# an answer would wait them out, and fail, since every peer keeps its connection open.
WAIT = 20


def test_a_content_length_answer_is_read_to_its_length_without_waiting_for_the_close(peer):
    server = peer(b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\nX-Thing: a:b\r\n\r\nhello", b" world and more")
    reply = rawhttp.request("POST", server.url("/bot/getUpdates?x=1"), b'{"a": 1}', {"Content-Type": "application/json"},
                            timeout=WAIT)
    assert fields(reply) == (200, {"content-length": "11", "x-thing": "a:b"}, b"hello world", False)
    head, body = server.requests[0]
    assert head.split("\r\n")[0] == "POST /bot/getUpdates?x=1 HTTP/1.1"
    assert {"Content-Type: application/json", "Content-Length: 8", "Connection: close"} <= set(head.split("\r\n"))
    assert body == b'{"a": 1}'


def test_a_chunked_answer_in_pieces_is_joined_and_ends_at_its_last_chunk(peer):
    server = peer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhel", b"lo\r\n",
                  b"6\r\n wor", b"ld\r\n0\r\n", b"\r\n")
    reply = rawhttp.request("GET", server.url(), timeout=WAIT)
    assert (reply.status, reply.body, reply.too_big) == (200, b"hello world", False)
    assert "Content-Length" not in server.requests[0][0]  # a GET without a body has none


def test_an_answer_without_length_is_read_to_the_close(peer):
    def answer(conn):
        conn.sendall(b"HTTP/1.0 404 Not Found\r\n\r\nnot ")
        conn.sendall(b"here")
        conn.shutdown(socket.SHUT_WR)

    reply = rawhttp.request("GET", peer(script=answer).url(), timeout=WAIT)
    assert (reply.status, reply.body) == (404, b"not here")


@pytest.mark.parametrize("framing", ["content-length", "chunked", "to the close"])
def test_a_body_over_the_cap_is_too_big_and_not_read_further(peer, framing):
    sent = []

    def endless(conn):
        head = {"content-length": "Content-Length: 10000000\r\n", "chunked": "Transfer-Encoding: chunked\r\n",
                "to the close": ""}[framing]
        conn.sendall(f"HTTP/1.1 200 OK\r\n{head}\r\n".encode())
        piece = b"4000\r\n" + b"x" * 0x4000 + b"\r\n" if framing == "chunked" else b"x" * 0x4000
        while len(sent) < 1000:  # 16 MB, far more than the kernel's buffers hold unread
            conn.sendall(piece)
            sent.append(len(piece))

    server = peer(script=endless)
    reply = rawhttp.request("GET", server.url(), timeout=WAIT, max_bytes=64 * 1024)
    assert (reply.status, reply.body, reply.too_big) == (200, b"", True)
    server.done.wait(WAIT)  # the client closed: the peer's writes failed
    assert len(sent) < 1000  # its writes failed once the client closed, unread


def test_a_trickling_peer_is_cut_by_the_deadline_not_per_read(peer):
    def trickle(conn):
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
        while not server.closing.wait(0.01):
            conn.sendall(b"x")

    server = peer(script=trickle)
    with pytest.raises(TimeoutError, match="no answer within 5s"):
        rawhttp.request("GET", server.url(), timeout=5, clock=ticking())


def test_status_only_stops_at_the_status_line(peer):
    server = peer(b"HTTP/1.1 201 Created\r\nX-Never: ")  # the headers never end
    reply = rawhttp.request("POST", server.url(), b"summary", timeout=WAIT, status_only=True)
    assert fields(reply) == (201, {}, b"", False)


@pytest.mark.parametrize("answer, error", [
    (b"HTTP/1.1 200 OK\r\nX-A: b", "the connection closed"),
    (b"HTTP/1.1 200 OK\r\nX-A: " + b"a" * 20000, "no end of the headers in the first 16 KB"),
])
def test_an_answer_whose_head_never_ends_is_incomplete(peer, answer, error):
    def write(conn):
        conn.sendall(answer)
        conn.shutdown(socket.SHUT_WR)

    with pytest.raises(rawhttp.Incomplete, match=error):
        rawhttp.request("GET", peer(script=write).url(), timeout=WAIT)


def test_a_status_line_that_is_not_http_is_status_0_or_with_status_only_an_error(peer):
    not_http = b"SSH-2.0-OpenSSH_9.2\r\nContent-Length: 0\r\n\r\n"
    assert rawhttp.request("GET", peer(not_http).url(), timeout=WAIT).status == 0
    with pytest.raises(ValueError, match="the answer is not HTTP"):
        rawhttp.request("GET", peer(not_http).url(), timeout=WAIT, status_only=True)


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback")
def test_an_ipv6_literal_with_userinfo_connects_and_sends_its_host_header(peer):
    server = peer(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK", host="::1")
    url = server.url("/ping?rid=1").replace("http://", "http://user:key@")
    assert rawhttp.split_url(url)[1:4] == ("::1", int(url.rsplit(":", 1)[1].split("/")[0]),
                                            url.split("@")[1].split("/")[0])
    assert rawhttp.request("GET", url, timeout=WAIT).body == b"OK"
    head = server.requests[0][0].split("\r\n")
    assert head[0] == "GET /ping?rid=1 HTTP/1.1"
    assert head[1] == f"Host: [::1]:{server.listener.getsockname()[1]}"
    assert "key" not in server.requests[0][0]  # userinfo is not sent


def test_the_lookup_is_kept_for_the_next_request(peer):
    server = peer(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
    lookups, addresses = [], {}

    def resolve(host, port):
        lookups.append((host, port))
        return rawhttp.resolve(host, port)

    for _ in range(2):
        assert rawhttp.request("GET", server.url(), timeout=WAIT, addresses=addresses, resolve=resolve).status == 204
    assert len(server.requests) == 2
    assert lookups == [("127.0.0.1", server.listener.getsockname()[1])]


def test_no_error_text_holds_the_url_secret():
    url = f"http://127.0.0.1:{closed_port()}/bot{SECRET}/getUpdates"
    errors = []
    for bad in (url, url.replace("http", "ftp"), url.replace("127.0.0.1:", "127.0.0.1:x"),
                url.replace("127.0.0.1", "host.invalid")):
        with pytest.raises((OSError, ValueError)) as caught:
            rawhttp.request("GET", bad, timeout=WAIT)
        errors.append(str(caught.value))
    assert "refused" in errors[0].lower()
    assert not [e for e in errors if SECRET in e or "bot" in e]


def test_parse_reads_what_was_cut_at_the_cap_as_too_big():
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 50
    assert fields(rawhttp.parse(raw, 64)) == (200, {"content-length": "100"}, b"", True)
    assert rawhttp.parse(raw, 1000).body == b"x" * 50  # closed early: what came
    assert rawhttp.parse(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 10).body == b""
