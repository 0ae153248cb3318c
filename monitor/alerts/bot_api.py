"""The Bot API calls other than sendMessage: one small JSON exchange on a plain socket.

getUpdates, answerCallbackQuery, editMessageReplyMarkup and setMyCommands carry a few
hundred bytes of JSON each way. Every run with Telegram makes one getUpdates call,
and requests or http.client would cost such a run 30-100 ms of imports for it (the
email package, ssl, urllib3), so this speaks HTTP/1.1 itself: `Connection: close`,
Content-Length or chunked, nothing else. ssl is imported for https only. The token
sits in the request path; no error text built here contains the path, and every
error text passes through `redact.scrub` anyway.
"""

import json
import re
import threading
import time
from typing import NamedTuple

from monitor import redact
from monitor.text import printable

MAX_ANSWER = 64 * 1024
_PIECE = 16 * 1024
_HEAD_ROOM = 16 * 1024  # the status line and headers, on top of the body's cap
_URL = re.compile(r"(https?)://(\[[^\]]+\]|[^/:?#@]+)(?::(\d+))?(/[^?#]*)?")


class Answer(NamedTuple):
    status: int                 # the HTTP status; 0: no whole answer
    body: dict                  # Telegram's JSON object ({} when it was not one)
    error: str | None = None    # short, scrubbed reason when there was no whole answer
    too_big: bool = False       # the answer was larger than max_bytes (not read further)

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.body.get("ok") is True

    def describe(self) -> str:
        """What went wrong, in one short line (the token never in it)."""
        if self.error:
            return self.error
        text = self.body.get("description") or "not Telegram's answer (is telegram.api_url right?)"
        return f"Telegram {self.status}: {printable(redact.scrub(str(text)))[:200]}"


class _Deadline(Exception):
    """No whole answer before the deadline."""


def call(api_url: str, token: str, method: str, payload: dict, timeout: float, max_bytes: int = MAX_ANSWER,
         monotonic=time.monotonic) -> Answer:
    """POST `payload` to `{api_url}/bot{token}/{method}`; return the answer within `timeout`. Never raises.

    The exchange runs in a helper thread abandoned at the deadline (a DNS lookup is
    not cut by a socket timeout); each read waits only for what is left of it, and
    at most `max_bytes` of the body are read.
    """
    match = _URL.fullmatch(api_url.rstrip("/"))
    if not match:
        return Answer(0, {}, "telegram.api_url is not an http(s) URL")
    deadline = monotonic() + timeout
    box: dict = {}
    done = threading.Event()
    body = json.dumps(payload).encode()

    def exchange():
        try:
            box["answer"] = _exchange(match, token, method, body, deadline, max_bytes, monotonic, box)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            box["error"] = exc
        finally:
            done.set()

    threading.Thread(target=exchange, name=f"telegram-{method}", daemon=True).start()
    if not done.wait(max(timeout, 0.0)) or isinstance(box.get("error"), (_Deadline, TimeoutError)):
        _shut(box.get("sock"))  # the abandoned thread's socket: let it go now
        return Answer(0, {}, f"Telegram unreachable: no whole answer to {method} within {timeout:g}s")
    if "error" in box:
        exc = box["error"]
        reason = ("connection refused" if isinstance(exc, ConnectionRefusedError)
                  else printable(redact.scrub(f"{type(exc).__name__}: {exc}"))[:160])
        return Answer(0, {}, f"Telegram unreachable: {reason}")
    return box["answer"]


def _shut(sock) -> None:
    if sock is None:
        return
    try:
        import socket

        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _exchange(match, token, method, body, deadline, max_bytes, monotonic, box) -> Answer:
    import socket

    scheme, host, port, prefix = match.group(1), match.group(2), match.group(3), match.group(4) or ""
    port = int(port) if port else (443 if scheme == "https" else 80)
    name = host.strip("[]")

    def left():
        remaining = deadline - monotonic()
        if remaining <= 0:
            raise _Deadline()
        return remaining

    # A str host is encoded with the idna codec (three more modules to import); ASCII needs none.
    sock = box["sock"] = socket.create_connection((name.encode() if name.isascii() else name, port),
                                                  timeout=left())
    try:
        if scheme == "https":
            import ssl

            sock = box["sock"] = ssl.create_default_context().wrap_socket(sock, server_hostname=name)
        head = (f"POST {prefix}/bot{token}/{method} HTTP/1.1\r\nHost: {host}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                "Accept-Encoding: identity\r\nConnection: close\r\n\r\n")
        sock.settimeout(left())
        sock.sendall(head.encode() + body)
        parts, size, parsed = [], 0, None
        while True:
            sock.settimeout(left())
            chunk = sock.recv(_PIECE)
            if not chunk:
                break
            parts.append(chunk)
            size += len(chunk)
            if parsed is None and b"\r\n\r\n" in b"".join(parts):  # small until then: see _HEAD_ROOM
                parsed = _split_head(b"".join(parts))
            if parsed is not None and _whole(parsed, size):
                break
            if size > max_bytes + _HEAD_ROOM or parsed is None and size > _HEAD_ROOM:
                break
    finally:
        sock.close()
    return _parse(b"".join(parts), max_bytes)


def _split_head(raw: bytes) -> tuple[int, dict, int]:
    """(status, lower-cased headers, where the body starts) of an answer's first bytes."""
    head, _, _ = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    try:
        status = int(lines[0].split()[1])
    except (IndexError, ValueError):
        status = 0
    headers = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    return status, headers, len(head) + 4


def _whole(parsed, size: int) -> bool:
    """Whether `size` bytes hold the whole answer (Content-Length reached; chunked: read to the close)."""
    _, headers, start = parsed
    length = headers.get("content-length", "")
    return "chunked" not in headers.get("transfer-encoding", "").lower() and length.isdigit() \
        and size - start >= int(length)


def _parse(raw: bytes, max_bytes: int) -> Answer:
    if b"\r\n\r\n" not in raw:
        return Answer(0, {}, "Telegram unreachable: no whole answer (the connection closed)")
    status, headers, start = _split_head(raw)
    rest = raw[start:]
    if "chunked" in headers.get("transfer-encoding", "").lower():
        rest = _unchunk(rest)
    elif headers.get("content-length", "").isdigit():
        rest = rest[:int(headers["content-length"])]
    if len(rest) > max_bytes:
        return Answer(status, {}, f"answer larger than {max_bytes // 1024} KB, not read further", too_big=True)
    try:
        body = json.loads(rest)
    except (ValueError, RecursionError):
        body = {}
    return Answer(status, body if isinstance(body, dict) else {})


def _unchunk(data: bytes) -> bytes:
    out, pos = [], 0
    while True:
        end = data.find(b"\r\n", pos)
        if end < 0:
            return b"".join(out)
        try:
            size = int(data[pos:end].split(b";")[0], 16)
        except ValueError:
            return b""
        if size <= 0:
            return b"".join(out)
        out.append(data[end + 2:end + 2 + size])
        pos = end + 2 + size + 2
