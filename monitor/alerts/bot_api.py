"""The Bot API calls other than sendMessage: one small JSON exchange within a deadline.

getUpdates, answerCallbackQuery, editMessageReplyMarkup and setMyCommands carry a few
hundred bytes of JSON each way, and every run with Telegram makes one getUpdates call:
requests would cost it 30-100 ms of imports, so they go over monitor/rawhttp.py. The
token sits in the request path, which no error text holds; all pass `redact.scrub` too.
"""

import json
import threading
import time
from typing import NamedTuple

from monitor import rawhttp, redact
from monitor.text import printable

MAX_ANSWER = 64 * 1024
_HEADERS = {"Content-Type": "application/json", "Accept-Encoding": "identity"}


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


def call(api_url: str, token: str, method: str, payload: dict, timeout: float, max_bytes: int = MAX_ANSWER,
         monotonic=time.monotonic) -> Answer:
    """POST `payload` to `{api_url}/bot{token}/{method}`; return the answer within `timeout`. Never raises.

    The exchange runs in a helper thread abandoned at the deadline (a DNS lookup is not
    cut by a socket timeout); at most `max_bytes` of the body are read."""
    try:
        if "?" in api_url or "#" in api_url:
            raise ValueError("a query or fragment")
        rawhttp.split_url(api_url)
    except ValueError:
        return Answer(0, {}, "telegram.api_url is not an http(s) URL")
    if timeout <= 0:  # the run's Telegram time is used up (notify.py): not asked at all
        return Answer(0, {}, f"{method} not sent: no time left for Telegram in this run")
    url, body = f"{api_url.rstrip('/')}/bot{token}/{method}", json.dumps(payload).encode()
    box, done = {}, threading.Event()

    def exchange():
        try:
            box["answer"] = _answer(rawhttp.request("POST", url, body, _HEADERS, timeout, max_bytes, monotonic,
                                                    hold=box), max_bytes)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            box["error"] = exc
        finally:
            done.set()

    threading.Thread(target=exchange, name=f"telegram-{method}", daemon=True).start()
    if not done.wait(max(timeout, 0.0)) or isinstance(box.get("error"), TimeoutError):
        _shut(box.get("sock"))  # the abandoned thread's socket: let it go now
        return Answer(0, {}, f"Telegram unreachable: no whole answer to {method} within {timeout:g}s")
    if "error" in box:
        exc = box["error"]
        reason = ("connection refused" if isinstance(exc, ConnectionRefusedError)
                  else f"no whole answer ({exc})" if isinstance(exc, rawhttp.Incomplete)
                  else printable(redact.scrub(f"{type(exc).__name__}: {exc}"))[:160])
        return Answer(0, {}, f"Telegram unreachable: {reason}")
    return box["answer"]


def _shut(sock) -> None:
    import _socket

    try:
        sock.shutdown(_socket.SHUT_RDWR)  # not close: the thread may still be using its fd
    except (AttributeError, OSError):  # no socket yet (None), or it is gone already
        pass


def _answer(reply: rawhttp.Reply, max_bytes: int) -> Answer:
    if reply.too_big:
        return Answer(reply.status, {}, f"answer larger than {max_bytes // 1024} KB, not read further", too_big=True)
    try:
        body = json.loads(reply.body)
    except (ValueError, RecursionError):
        body = {}
    return Answer(reply.status, body if isinstance(body, dict) else {})


def _parse(raw: bytes, max_bytes: int) -> Answer:
    """The Answer in an answer's bytes, as `call` reads it."""
    try:
        return _answer(rawhttp.parse(raw, max_bytes), max_bytes)
    except rawhttp.Incomplete as exc:
        return Answer(0, {}, f"Telegram unreachable: no whole answer ({exc})")
