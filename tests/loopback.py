"""Real HTTP servers on 127.0.0.1 for tests, answering however a test scripts them.

`serve()` starts a ThreadingHTTPServer on a free port; `server.route(path, answer)`
says how a path answers. Answers are small functions of the request handler:
`reply` (status, headers, body, delay), `trickle`, `endless`, `redirect`. Every
request's path and headers are kept in `server.received`.
"""

import contextlib
import json as jsonlib
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        server = self.server
        with server.lock:
            server.received.append((self.path, dict(self.headers.items())))
        answer = server.routes.get(self.path.split("?")[0], not_found)
        try:
            answer(self)
        except OSError:  # the client hung up: the check under test gave up, as it should
            self.close_connection = True

    def log_message(self, format, *args):
        pass

    def send_whole(self, status: int, headers: dict, body: bytes) -> None:
        """Status line, headers and body in one write (no Nagle wait between them)."""
        lines = [f"HTTP/1.1 {status} {self.responses.get(status, ('',))[0]}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        if "Content-Length" not in headers:
            lines.append(f"Content-Length: {len(body)}")
        self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # 20 checks connect at once; a backlog of 5 drops SYNs

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.routes: dict = {}
        self.received: list = []
        self.lock = threading.Lock()
        self.closing = threading.Event()  # ends trickling answers when the test is over

    @property
    def port(self) -> int:
        return self.server_address[1]

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def route(self, path: str, answer) -> str:
        """Make `path` answer with `answer(handler)`; return its URL."""
        self.routes[path] = answer
        return self.url(path)

    def get_request(self):
        sock, address = super().get_request()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock, address

    def handle_error(self, request, client_address):
        pass


@contextlib.contextmanager
def serve(server=None):
    """Run a Server (a new one, or `server` prepared by the caller) in a background thread
    for the duration of the `with` block."""
    server = Server() if server is None else server
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.closing.set()
        server.shutdown()
        server.server_close()


# --- answers -------------------------------------------------------------------------

def reply(status: int = 200, body: bytes | str = b"", headers: dict | None = None,
          delay: float = 0.0, json=None):
    """Answer `status` with `body` (or `json` encoded) after `delay` seconds."""
    if json is not None:
        body = jsonlib.dumps(json)
        headers = {"Content-Type": "application/json", **(headers or {})}
    data = body.encode() if isinstance(body, str) else body

    def answer(handler):
        if delay:
            handler.server.closing.wait(delay)
        handler.send_whole(status, headers or {}, data)
    return answer


def not_found(handler):
    handler.send_whole(404, {}, b"no such route")


def redirect(location: str, status: int = 301):
    def answer(handler):
        handler.send_whole(status, {"Location": location}, b"moved")
    return answer


def trickle(length: int = 100, interval: float = 1.0):
    """Announce `length` bytes, then send one every `interval` seconds."""
    def answer(handler):
        handler.wfile.write(f"HTTP/1.1 200 OK\r\nContent-Length: {length}\r\n\r\n".encode())
        for _ in range(length):
            if handler.server.closing.wait(interval):
                break
            handler.wfile.write(b"x")
        handler.close_connection = True
    return answer


def endless(chunk: bytes = b"x" * 65536):
    """Send a body with no length, as fast as the client reads, until it hangs up."""
    def answer(handler):
        handler.wfile.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
        while not handler.server.closing.is_set():
            handler.wfile.write(chunk)
        handler.close_connection = True
    return answer


def sized(payload: bytes, chunk: int = 65536):
    """Send `payload` in slices of a memoryview, so the server itself copies nothing."""
    view = memoryview(payload)

    def answer(handler):
        handler.wfile.write(f"HTTP/1.1 200 OK\r\nContent-Length: {len(payload)}\r\n\r\n".encode())
        for start in range(0, len(view), chunk):
            handler.wfile.write(view[start:start + chunk])
    return answer


# --- sockets that are not HTTP servers -----------------------------------------------

@contextlib.contextmanager
def silent_port():
    """A port that accepts connections (the kernel's backlog does) and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


def closed_port() -> int:
    """A port nothing listens on: connecting is refused."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def elapsed(func, *args, **kwargs):
    """Call `func`; return its result and the seconds it took."""
    started = time.monotonic()
    result = func(*args, **kwargs)
    return result, time.monotonic() - started


@pytest.fixture
def server():
    """A loopback HTTP server whose answers each test scripts."""
    with serve() as srv:
        yield srv


@pytest.fixture
def session():
    """The pooled probe session a health run shares between its checks."""
    from monitor import http

    with http.new_session() as s:
        yield s
