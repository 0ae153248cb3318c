"""Telegram Bot API client: send one HTML message, and say exactly what happened.

Plain requests for sending, no bot framework. `send` never raises and never sleeps longer than a
few seconds: a 429 whose `retry_after` does not fit the run, a 5xx or a network
error after bounded retries, and a rejected token all come back as an undelivered
`Delivery` for the outbox. The token sits inside the request URL, so every error
text passes through `redact.scrub`, and the token is registered there on creation.

The bot's other calls (getUpdates, answerCallbackQuery, editMessageReplyMarkup,
setMyCommands) go through `call` (monitor/alerts/bot_api.py), on a plain socket.
"""

import json
import re
import threading
import time
import zlib
from typing import NamedTuple

from monitor import redact
from monitor.text import printable  # Telegram's answer is an HTTP body: shown printable

LIMIT = 4096  # Telegram's maximum message length, in characters
# A send the run's own time for Telegram (`deadline`) cut short: Telegram was answering, maybe
# slowly; not "unreachable" (which stops the runs reading commands for a while).
OUT_OF_TIME = "not sent: the run's time for Telegram is used up"
_PARSE_ERROR = "can't parse entities"


class Delivery(NamedTuple):
    ok: bool
    error: str | None = None          # short, scrubbed reason
    retry_at: float | None = None     # do not try again before this time (429)
    config_error: bool = False        # the token or the chat is wrong: a person must act
    chat_id: str | None = None        # the chat it went to (differs after a migration)
    migrated_from: str | None = None
    refused: bool = False             # a 4xx about what was sent, not the token, chat or rate: sent
                                      # again it is refused again (a chart Telegram cannot process)


class TelegramClient:
    """Send messages with `{api_url}/bot{token}/sendMessage`.

    Every `send` ends within `timeout` seconds of wall-clock time, retries and waits
    included: the request runs in a helper thread that is abandoned at the deadline
    (a DNS lookup or a server trickling its headers is never cut by a per-read
    timeout), and the answer is read in small pieces, each waiting only for what is
    left of the deadline, at most MAX_ANSWER bytes of it.
    """

    def __init__(self, token: str, api_url: str = "https://api.telegram.org", timeout: float = 10.0,
                 session=None, sleep=time.sleep, clock=time.time, max_wait: float = 3.0,
                 retries: int = 2, monotonic=time.monotonic):
        redact.register(token)
        self._token = token
        self._url = f"{api_url.rstrip('/')}/bot{token}/sendMessage"
        self._api_url = api_url
        self.timeout, self.sleep, self.clock, self.monotonic = timeout, sleep, clock, monotonic
        self.max_wait, self.retries = max_wait, retries
        self._session = session
        self.deadline: float | None = None  # monotonic: the run's whole Telegram step ends by then (notify.py)

    @property
    def session(self):
        """requests, imported on the first message: a run with nothing to send never needs it."""
        if self._session is None:
            import requests

            self._session = requests.Session()
        return self._session

    @property
    def _requests(self):
        import requests

        return requests

    def call(self, method: str, payload: dict, max_bytes: int = 64 * 1024, timeout: float | None = None):
        """Call the Bot API `method` with `payload` within `timeout` (default: the client's); never raises."""
        from monitor.alerts.bot_api import call

        timeout = self.timeout if timeout is None else timeout
        if self.deadline is not None:
            timeout = min(timeout, self.deadline - self.monotonic())
        return call(self._api_url, self._token, method, payload, timeout, max_bytes, self.monotonic)

    def send(self, chat_id: str, text: str, disable_notification: bool = False,
             parse_mode: str | None = "HTML", reply_markup: dict | None = None) -> Delivery:
        """Deliver `text` (already split under LIMIT) to `chat_id` within `timeout`; never raises."""
        plain_retry_done, migrated_from = False, None
        failures, waited = 0, 0.0
        deadline = self.monotonic() + self.timeout
        run_bound = self.deadline is not None and self.deadline < deadline  # the run's time ends first
        if run_bound:
            deadline = self.deadline
        while True:
            payload = {"chat_id": chat_id, "text": text, "disable_notification": disable_notification,
                       "disable_web_page_preview": True}
            if parse_mode:
                payload["parse_mode"] = parse_mode
            if reply_markup:
                payload["reply_markup"] = reply_markup
            remaining = deadline - self.monotonic()
            try:
                if remaining <= 0:
                    raise _Deadline()
                status, reason, headers, raw_body, too_big = self._post(payload, remaining)
            except _Deadline:
                # Telegram may have shown the message: the outbox retries next run
                # (a duplicate beats silence).
                if run_bound:
                    return Delivery(False, OUT_OF_TIME, chat_id=chat_id)
                return Delivery(False, f"Telegram unreachable: no whole answer within {self.timeout:g}s",
                                chat_id=chat_id)
            except self._requests.RequestException as exc:
                reason = self._network_reason(exc)
                if isinstance(exc, self._requests.ReadTimeout):
                    if run_bound and deadline - self.monotonic() < 0.1:
                        return Delivery(False, OUT_OF_TIME, chat_id=chat_id)
                    return Delivery(False, f"Telegram unreachable: {reason}", chat_id=chat_id)
                failures += 1
                pause = 0.5 * failures
                if failures > self.retries or pause >= deadline - self.monotonic():
                    return Delivery(False, f"Telegram unreachable: {reason}", chat_id=chat_id)
                self.sleep(pause)
                continue
            body = {} if too_big else _json_bytes(raw_body)
            if too_big:
                description = f"answer larger than {MAX_ANSWER // 1024} KB, not read further"
            else:
                description = printable(redact.scrub(str(body.get("description") or reason or "")))[:200]
            params = body.get("parameters") if isinstance(body.get("parameters"), dict) else {}
            if status == 200 and body.get("ok") is True:
                return Delivery(True, chat_id=chat_id, migrated_from=migrated_from)
            if status == 200:
                # Telegram always answers {"ok": true, ...}. Anything else is a proxy or a
                # wrong api_url swallowing alerts: keep the message (a duplicate beats silence).
                what = f" ({description})" if too_big else ""
                return Delivery(False, f"the answer to sendMessage was HTTP 200 but not Telegram's{what} "
                                "(is telegram.api_url right? a proxy in the way?)", config_error=True,
                                chat_id=chat_id)
            if status == 429:
                retry_after = _number(params.get("retry_after")) or _number(headers.get("Retry-After")) or 1
                if waited + retry_after <= self.max_wait and retry_after < deadline - self.monotonic():
                    waited += retry_after
                    self.sleep(retry_after)
                    continue
                return Delivery(False, f"rate limited by Telegram for {retry_after:g}s", chat_id=chat_id,
                                retry_at=self.clock() + retry_after)
            if status == 400 and params.get("migrate_to_chat_id") and not migrated_from:
                migrated_from, chat_id = chat_id, str(params["migrate_to_chat_id"])
                continue
            if status == 400 and _PARSE_ERROR in description and parse_mode and not plain_retry_done:
                plain_retry_done, parse_mode, text = True, None, html_to_plain(text)
                continue
            if status in (401, 403, 404) or status == 400:
                what = {401: "the bot token was rejected", 404: "the bot token was rejected",
                        403: f"the bot may not write to chat {chat_id}"}.get(status, f"chat {chat_id} refused the message")
                return Delivery(False, f"Telegram {status}: {what} ({description})", config_error=True,
                                chat_id=chat_id, refused=status == 400 and about_the_picture(description))
            if 400 < status < 500 and status not in (408, 429):  # 413 and the like: the same request fails again
                return Delivery(False, f"Telegram {status}: {description or 'request refused'}", chat_id=chat_id,
                                refused=True)
            failures += 1
            pause = 0.5 * failures
            if failures > self.retries or pause >= deadline - self.monotonic():
                return Delivery(False, f"Telegram {status}: {description or 'server error'}", chat_id=chat_id)
            self.sleep(pause)

    def _network_reason(self, exc) -> str:
        """No answer at all, in the words every client uses (monitor.net_errors)."""
        from urllib.parse import urlsplit

        from monitor.net_errors import describe

        try:
            host = urlsplit(self._api_url).hostname
        except ValueError:
            host = None
        return describe(exc, host=host)

    def _post(self, payload: dict, seconds: float):
        """POST `payload`; return (status, reason, headers, body, too_big) within `seconds`.

        Raise _Deadline when no whole answer came in time, or requests' exception.
        """
        box: dict = {}
        done = threading.Event()
        deadline = self.monotonic() + seconds

        def exchange():
            try:
                response = self.session.post(self._url, json=payload, stream=True,
                                             headers={"Accept-Encoding": "identity"},
                                             timeout=(min(seconds, 5.0), seconds))
                box["response"] = response
                try:
                    body, too_big = _read_answer(response, deadline, self.monotonic)
                finally:
                    response.close()
                box["answer"] = (response.status_code, response.reason, response.headers, body, too_big)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                box["error"] = exc
            finally:
                done.set()

        worker = threading.Thread(target=exchange, name="telegram-send", daemon=True)
        worker.start()
        if not done.wait(max(seconds, 0.0)) or "answer" not in box and isinstance(box.get("error"), _Deadline):
            _close(box.get("response"))  # the abandoned thread's socket: let it go now
            raise _Deadline()
        if "error" in box:
            raise box["error"]
        return box["answer"]


class _Deadline(Exception):
    """No whole answer from Telegram before the deadline."""


MAX_ANSWER = 64 * 1024  # Telegram's answers are a few hundred bytes; more is not read
_PIECE = 16 * 1024


def _read_answer(response, deadline: float, monotonic) -> tuple[bytes, bool]:
    """Read at most MAX_ANSWER bytes of the body before `deadline`; return it and whether it was cut.

    urllib3's read(amt) loops until `amt` bytes arrived, and the socket timeout
    restarts with every recv(), so a body trickled a byte a second would never end:
    each read1 is one recv() that may only wait for what is left of the deadline.
    """
    from monitor.http import limit_socket_wait

    raw = response.raw
    encoding = (response.headers.get("Content-Encoding") or "").strip().lower()
    # Asked for identity; a server that compresses anyway is inflated with a bound too.
    inflate = zlib.decompressobj(zlib.MAX_WBITS | 32) if encoding in ("gzip", "x-gzip", "deflate") else None
    parts, size = [], 0
    while True:
        remaining = deadline - monotonic()
        if remaining <= 0:
            raise _Deadline()
        limit_socket_wait(raw, remaining)
        try:
            chunk = raw.read1(_PIECE, decode_content=False)
        except Exception as exc:  # noqa: BLE001 - urllib3/socket timeouts at the deadline
            from monitor.net_errors import is_timeout

            if deadline - monotonic() <= 0.01 or is_timeout(exc):
                raise _Deadline() from None
            raise
        if not chunk:
            return b"".join(parts), False
        if inflate is not None:
            try:
                chunk = inflate.decompress(chunk, MAX_ANSWER + 1 - size)
            except zlib.error:
                return b"", False  # not JSON, so not Telegram's answer
        parts.append(chunk)
        size += len(chunk)
        if size > MAX_ANSWER:
            return b"".join(parts)[:MAX_ANSWER], True


def _close(response) -> None:
    if response is None:
        return
    try:
        sock = getattr(getattr(response.raw, "connection", None), "sock", None)
        if sock is not None:
            import socket

            sock.shutdown(socket.SHUT_RDWR)
    except (OSError, AttributeError):
        pass


def _json_bytes(raw: bytes) -> dict:
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        return {}
    return body if isinstance(body, dict) else {}


def _number(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


# --- text -------------------------------------------------------------------------

_TAG = re.compile(r"<[^>]*>")


def html_to_plain(text: str) -> str:
    """The visible text of a message: tags removed, entities decoded."""
    import html

    return html.unescape(_TAG.sub("", text))


def units(text: str) -> int:
    """Length as Telegram counts it: UTF-16 code units (an emoji outside the BMP is 2)."""
    return len(text) if text.isascii() else len(text.encode("utf-16-le")) // 2


def split_message(text: str, limit: int = LIMIT) -> list[str]:
    """Split `text` into chunks of at most `limit` characters on line breaks.

    Our messages open and close every tag on the line that opened it, so a line break
    is never inside a tag. A single line longer than the limit is cut at a tag or
    entity boundary, with open tags closed at the cut and reopened after it.
    """
    chunks, current = [], ""
    for line in text.split("\n"):
        candidate = f"{current}\n{line}" if current else line
        if units(candidate) <= limit:
            current = candidate
            continue
        if current:
            chunks.append(current)
            current = ""
        while units(line) > limit:
            head, line = _cut_line(line, limit)
            chunks.append(head)
        current = line
    if current or not chunks:
        chunks.append(current)
    return chunks


_TOKEN = re.compile(r"<[^>]*>|&[#A-Za-z0-9]+;|[^<&]|[<&]", re.DOTALL)


def _cut_line(line: str, limit: int) -> tuple[str, str]:
    """Cut one over-long HTML line; return (head within limit, rest) with tags balanced."""
    open_tags: list[str] = []
    out, size, pos = [], 0, 0
    for match in _TOKEN.finditer(line):
        token = match.group(0)
        after = list(open_tags)
        if token.startswith("</") and after:
            after.pop()
        elif token.startswith("<") and len(token) > 2 and token.endswith(">") and not token.endswith("/>"):
            after.append(token[1:-1].split()[0])
        if out and size + units(token) + sum(len(t) + 3 for t in after) > limit:
            break
        out.append(token)
        size += units(token)
        pos, open_tags = match.end(), after
    head = "".join(out) + "".join(f"</{t}>" for t in reversed(open_tags))
    rest = "".join(f"<{t}>" for t in open_tags) + line[pos:]
    return head, rest


# --- photos: the daily report's chart ----------------------------------------------------------

# Words of a 400 about the picture itself (PHOTO_INVALID_DIMENSIONS, IMAGE_PROCESS_FAILED,
# "file is too big", "not enough rights to send photos to the chat"): sent again, it is
# refused again, while the chat takes text. Any other 400 (chat not found, no rights to
# send a message, PEER_ID_INVALID) is the chat's, and the text would fail as well.
_PICTURE_WORDS = ("photo", "image", "file", "dimension")


def about_the_picture(description: str) -> bool:
    """Whether a 400's description is about the picture sent, not the chat or the bot."""
    lowered = description.lower()
    return any(word in lowered for word in _PICTURE_WORDS)


CAPTION_LIMIT = 1024  # Telegram's caption limit, in characters (UTF-16 units)
MAX_PHOTO = 1024 * 1024  # the report's chart is < 200 KB; more is refused here, never uploaded


class _PhotoSession:
    """The client's session, turning `send`'s one JSON POST into sendPhoto's multipart/form-data."""

    def __init__(self, session, url: str, photo: bytes):
        self.session, self.url, self.photo = session, url, photo

    def post(self, url, json=None, **kwargs):
        fields = {"chat_id": str(json["chat_id"]), "caption": json["text"],
                  "disable_notification": "true" if json.get("disable_notification") else "false"}
        return self.session.post(self.url, data=fields, files={"photo": ("chart.png", self.photo, "image/png")},
                                 **kwargs)


def send_photo(client: TelegramClient, chat_id: str, photo: bytes, caption: str,
               disable_notification: bool = False) -> Delivery:
    """Deliver `photo` (PNG bytes) with a plain-text `caption` through `sendPhoto`; never raises.

    The same machinery as `send`, on a view of `client`: one deadline for the whole
    exchange, bounded retries, 429 and migrations, the answer read in capped pieces,
    and every error text scrubbed of the token.
    """
    import copy

    if len(photo) > MAX_PHOTO:
        return Delivery(False, f"photo of {len(photo)} bytes is over {MAX_PHOTO // 1024} KB", config_error=True,
                        chat_id=chat_id)
    if units(caption) > CAPTION_LIMIT:
        caption = caption.encode("utf-16-le")[:2 * (CAPTION_LIMIT - 1)].decode("utf-16-le", "ignore") + "…"
    view = copy.copy(client)
    view._session = _PhotoSession(client.session, client._url.rsplit("/", 1)[0] + "/sendPhoto", photo)
    return view.send(chat_id, caption, disable_notification, parse_mode=None)
