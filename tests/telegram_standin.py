"""A loopback stand-in for the Telegram Bot API, for end-to-end tests of the notifier.

`TelegramStandIn` is a ThreadingHTTPServer on 127.0.0.1 (port 0) in a background
thread. It answers `POST /bot<token>/sendMessage` the way Telegram does: 200 with
`{"ok": true, "result": {...}}`, or an `{"ok": false, "error_code", "description",
"parameters"}` body. Like Telegram it refuses HTML it cannot parse (400 "can't parse
entities") and texts over 4096 characters (400 "message is too long"), so a test that
only counts deliveries also proves the text was valid.

Hostile answers (`trickling_body`, `trickling_headers`, `endless_body`) write the
HTTP answer themselves, a byte at a time or without end, until the client hangs up
or the stand-in stops.

Failures are scripted: `fail(answer, ...)` queues answers for the next requests;
`always(answer)` answers every request that way until `always(None)`;
`refuse_chat(chat_id, answer)` answers every request for one chat that way. `stop()` closes
the socket (connection refused), `start()` reopens it on the same port. `photo_answer`,
when set, answers every sendPhoto (a picture Telegram cannot process). Every request
is kept in `received` (thread-safe); `delivered` is what was answered 200.

The bot's other calls (monitor/alerts/bot.py) are answered as documented at
https://core.telegram.org/bots/api: `getUpdates` returns the queued updates from
`offset` on (at most `limit`, default 100); an update counts as confirmed, and is
forgotten, once getUpdates is called with an offset above its update_id; a negative
offset keeps only the last -offset updates; `allowed_updates` filters the kinds; with
`webhook` set it answers 409 Conflict, as Telegram does while a webhook is set.
`answerCallbackQuery`, `editMessageReplyMarkup`, `setMyCommands` and `getMe` answer ok.
Tests queue updates with `command(text, ...)` and `press(data, ...)`, or any dict with
`post(update)`; every such call is kept in `calls` as (method, payload); `method(name,
answer)` scripts the answers of one method, `slow(name, seconds)` answers each of its
calls that much later, and `observe(name, look)` calls `look(payload)` as each arrives
(to see the state files at that moment).

Usable without pytest: `with TelegramStandIn() as bot: ...`.
"""

import html.parser
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import NamedTuple

LIMIT = 4096
# Tags Telegram accepts in parse_mode HTML (https://core.telegram.org/bots/api#html-style).
ALLOWED_TAGS = {"b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "a", "code", "pre",
                "tg-spoiler", "span", "blockquote", "tg-emoji"}
_ENTITY = re.compile(r"&(?:lt|gt|amp|quot|#\d+|#x[0-9a-fA-F]+);")
_PATH = re.compile(r"/bot(?P<token>[^/]+)/(?P<method>\w+)$")


class Received(NamedTuple):
    path: str
    token: str
    chat_id: str
    text: str
    parse_mode: str | None
    disable_notification: bool
    status: int              # what the stand-in answered (0: it never answered)
    reply_markup: dict | None = None


# --- scripted answers -----------------------------------------------------------------------

class Answer(NamedTuple):
    status: int
    body: bytes
    hang: bool = False
    stream: object = None    # stream(handler): writes the answer itself, however slowly or hugely


def _error(status: int, description: str, parameters: dict | None = None) -> Answer:
    body = {"ok": False, "error_code": status, "description": description}
    if parameters:
        body["parameters"] = parameters
    return Answer(status, json.dumps(body).encode())


def too_many_requests(retry_after: int) -> Answer:
    return _error(429, f"Too Many Requests: retry after {retry_after}", {"retry_after": retry_after})


def server_error() -> Answer:
    return _error(500, "Internal Server Error")


def parse_error() -> Answer:
    return _error(400, "Bad Request: can't parse entities: Unsupported start tag \"x\" at byte offset 3")


def migrated(new_chat_id: int) -> Answer:
    return _error(400, "Bad Request: group chat was upgraded to a supergroup chat",
                  {"migrate_to_chat_id": new_chat_id})


def unauthorized() -> Answer:
    return _error(401, "Unauthorized")


def forbidden() -> Answer:
    return _error(403, "Forbidden: bot was kicked from the supergroup chat")


def polled_elsewhere() -> Answer:
    """getUpdates' 409 while another program polls the same bot (two hosts sharing a token)."""
    return _error(409, "Conflict: terminated by other getUpdates request; make sure that only one bot "
                       "instance is running")


def invalid_json() -> Answer:
    return Answer(200, b"<html><body>502 Bad Gateway</body></html>")


HANG = Answer(0, b"", hang=True)  # accept the request and never answer


def _until_closed(handler, piece: bytes, interval: float) -> None:
    standin = handler.server.standin
    while not standin.closing.wait(interval):
        handler.wfile.write(piece)
        handler.wfile.flush()


def trickling_body(interval: float = 0.2) -> Answer:
    """200 with a 100 KB Content-Length, then one byte of the body every `interval` seconds."""
    def stream(handler):
        handler.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                            b"Content-Length: 100000\r\n\r\n{")
        _until_closed(handler, b" ", interval)
    return Answer(0, b"", stream=stream)  # status 0: never answered whole


def trickling_headers(interval: float = 0.2) -> Answer:
    """The status line, then one byte of an endless header every `interval` seconds."""
    def stream(handler):
        handler.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
        _until_closed(handler, b"x", interval)
    return Answer(0, b"", stream=stream)


def endless_body() -> Answer:
    """200 with no length, then 64 KB pieces of a JSON string as fast as the client reads them."""
    def stream(handler):
        handler.wfile.write(b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n'
                            b'{"ok": true, "result": "')
        _until_closed(handler, b"x" * 65536, 0)
    return Answer(0, b"", stream=stream)


# --- Telegram's own validation ---------------------------------------------------------------

class _HtmlCheck(html.parser.HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=False)
        self.stack, self.error = [], None

    def handle_starttag(self, tag, attrs):
        if tag not in ALLOWED_TAGS:
            self.error = self.error or f'Unsupported start tag "{tag}"'
        self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.error = self.error or f'Unexpected end tag "{tag}"'
        else:
            self.stack.pop()


def html_error(text: str) -> str | None:
    """Why Telegram would refuse `text` in parse_mode HTML, or None if it accepts it."""
    # Outside tags, "<" and "&" must be escaped; only a few named entities exist.
    outside = re.sub(r"</?[A-Za-z][A-Za-z0-9-]*(?:\s[^<>]*)?>", "", text)
    if "<" in outside:
        return "Unsupported start tag"
    if "&" in _ENTITY.sub("", outside):
        return "Can't find end of the entity"
    check = _HtmlCheck()
    check.feed(text)
    check.close()
    if check.error:
        return check.error
    if check.stack:
        return f'Can\'t find end tag corresponding to start tag "{check.stack[-1]}"'
    return None


# --- the server ---------------------------------------------------------------------------------

class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        standin: TelegramStandIn = self.server.standin
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        match = _PATH.match(self.path)
        if match and match["method"] == "sendPhoto":
            return _send_photo(self, standin, match, raw)
        try:
            payload = json.loads(raw or b"{}")
        except ValueError:
            payload = None
        if match and isinstance(payload, dict) and match["method"] in standin.METHODS:
            answer = standin._bot_call(match["method"], payload)
            look, delay = standin._observers.get(match["method"]), standin._delays.get(match["method"], 0)
            if look is not None:
                look(payload)
            if delay:
                standin.closing.wait(delay)
            return self._answer(answer)
        if not match or match["method"] != "sendMessage" or not isinstance(payload, dict):
            return self._send(_error(404, "Not Found"))
        answer = standin._next_answer(str(payload.get("chat_id")))
        if answer is None:
            answer = standin._judge(payload)
        record = Received(self.path, match["token"], str(payload.get("chat_id")), payload.get("text", ""),
                          payload.get("parse_mode"), bool(payload.get("disable_notification", False)),
                          answer.status, payload.get("reply_markup"))
        standin._record(record)
        return self._answer(answer)

    def _answer(self, answer: Answer):
        standin: TelegramStandIn = self.server.standin
        if answer.hang:
            standin.closing.wait(60)
            self.close_connection = True
            return None
        if answer.stream is not None:
            self.close_connection = True
            try:
                answer.stream(self)
            except OSError:  # the client gave up, as it should
                pass
            return None
        return self._send(answer)

    def _send(self, answer: Answer):
        head = (f"HTTP/1.1 {answer.status} {self.responses.get(answer.status, ('',))[0]}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(answer.body)}\r\n\r\n")
        try:
            self.wfile.write(head.encode("latin-1") + answer.body)
        except OSError:  # the client gave up (a timeout under test)
            self.close_connection = True

    def log_message(self, format, *args):
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        pass


class TelegramStandIn:
    """The Bot API on a loopback port; see the module docstring."""

    METHODS = ("getUpdates", "answerCallbackQuery", "editMessageReplyMarkup", "setMyCommands", "getMe")
    BOT = {"id": 4242, "is_bot": True, "first_name": "monitor", "username": "monitor_test_bot"}

    def __init__(self):
        self.updates: list[dict] = []       # not yet confirmed
        self.calls: list[tuple[str, dict]] = []
        self.webhook = False
        self.commands = None
        self._next_update = 1000
        self._method_answers: dict[str, list[Answer]] = {}
        self._delays: dict[str, float] = {}
        self._observers: dict = {}
        self._lock = threading.Lock()
        self._received: list[Received] = []
        self._script: list[Answer] = []
        self._always: Answer | None = None
        self._refused: dict[str, Answer] = {}
        self.photo_answer: Answer | None = None
        self._message_id = 0
        self.closing = threading.Event()
        self.port = 0
        self._server = None
        self.start()

    # lifecycle
    def start(self) -> None:
        """Listen (again, on the same port after `stop`)."""
        self.closing.clear()
        self._server = _Server(("127.0.0.1", self.port), _Handler)
        self._server.standin = self
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Close the listening socket: clients now get "connection refused"."""
        if self._server is None:
            return
        self.closing.set()
        self._server.shutdown()
        self._server.server_close()
        self._server = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # scripting
    def fail(self, *answers: Answer) -> None:
        """Answer the next requests with these, in order, then normally again."""
        with self._lock:
            self._script.extend(answers)

    def always(self, answer: Answer | None) -> None:
        """Answer every request with `answer` (None: answer normally again)."""
        with self._lock:
            self._always = answer

    def refuse_chat(self, chat_id: str, answer: Answer | None) -> None:
        """Answer every request for `chat_id` with `answer` (None: accept it again)."""
        with self._lock:
            if answer is None:
                self._refused.pop(chat_id, None)
            else:
                self._refused[chat_id] = answer

    def method(self, name: str, *answers: Answer) -> None:
        """Answer the next calls of the Bot API method `name` with these, in order."""
        with self._lock:
            self._method_answers.setdefault(name, []).extend(answers)

    def slow(self, name: str, seconds: float) -> None:
        """Answer every call of the Bot API method `name` `seconds` late (0: at once again)."""
        with self._lock:
            self._delays[name] = seconds

    def observe(self, name: str, look) -> None:
        """Call `look(payload)` as each call of `name` arrives, before it is answered."""
        with self._lock:
            self._observers[name] = look

    # updates, as Telegram would queue them for getUpdates
    def post(self, update: dict) -> dict:
        """Queue `update`, numbered with the next update_id unless it has one."""
        with self._lock:
            if "update_id" not in update:
                update = {"update_id": self._next_update, **update}
                self._next_update += 1
            self.updates.append(update)
        return update

    def command(self, text: str, chat_id="-100123", user_id=111, username="anna", chat_type="supergroup") -> dict:
        """A message as a user types it in a chat."""
        sender = {"id": user_id, "is_bot": False, "first_name": (username or "someone").title()}
        if username:
            sender["username"] = username
        return self.post({"message": {"message_id": self._next_update, "date": 1795700000, "text": text,
                                      "from": sender, "chat": {"id": int(chat_id), "type": chat_type,
                                                               "title": "ops"}}})

    def press(self, data: str, message: Received | None = None, chat_id="-100123", user_id=111,
              username="anna") -> dict:
        """A press on an inline button of `message` (one the stand-in delivered)."""
        sender = {"id": user_id, "is_bot": False, "first_name": (username or "someone").title()}
        if username:
            sender["username"] = username
        shown = {"message_id": 1, "date": 1795700000, "text": message.text if message else "",
                 "chat": {"id": int(message.chat_id if message else chat_id), "type": "supergroup"}}
        if message is not None and message.reply_markup:
            shown["reply_markup"] = message.reply_markup
        return self.post({"callback_query": {"id": f"cb{self._next_update}", "from": sender, "data": data,
                                             "chat_instance": "1", "message": shown}})

    def calls_of(self, method: str) -> list[dict]:
        with self._lock:
            return [payload for name, payload in self.calls if name == method]

    # what arrived
    @property
    def received(self) -> list[Received]:
        with self._lock:
            return list(self._received)

    @property
    def delivered(self) -> list[Received]:
        """Messages Telegram would have shown: answered 200."""
        return [r for r in self.received if r.status == 200]

    def clear(self) -> None:
        with self._lock:
            self._received.clear()

    # internals, called from handler threads
    def _next_answer(self, chat_id: str) -> Answer | None:
        with self._lock:
            if chat_id in self._refused:
                return self._refused[chat_id]
            if self._script:
                return self._script.pop(0)
            return self._always

    def _judge(self, payload: dict) -> Answer:
        text = payload.get("text")
        if not isinstance(text, str) or not text.strip():
            return _error(400, "Bad Request: message text is empty")
        if payload.get("parse_mode") == "HTML":
            error = html_error(text)
            if error:
                return _error(400, f"Bad Request: can't parse entities: {error}")
        if len(text) > LIMIT:
            return _error(400, "Bad Request: message is too long")
        with self._lock:
            self._message_id += 1
            message_id = self._message_id
        chat_id = payload.get("chat_id")
        result = {"message_id": message_id, "date": 1795700000, "text": text,
                  "chat": {"id": int(chat_id) if str(chat_id).lstrip("-").isdigit() else chat_id,
                           "type": "supergroup"}}
        return Answer(200, json.dumps({"ok": True, "result": result}).encode())

    def _bot_call(self, method: str, payload: dict) -> Answer:
        with self._lock:
            self.calls.append((method, payload))
            scripted = self._method_answers.get(method)
            if scripted:
                return scripted.pop(0)
            if method == "getUpdates":
                if self.webhook:
                    return _error(409, "Conflict: can't use getUpdates method while webhook is active; "
                                       "use deleteWebhook to delete the webhook first")
                offset, limit = payload.get("offset"), payload.get("limit", 100)
                if isinstance(offset, int) and offset < 0:
                    self.updates = self.updates[offset:]
                elif isinstance(offset, int):
                    self.updates = [u for u in self.updates if u["update_id"] >= offset]
                kinds = payload.get("allowed_updates")
                result = [u for u in self.updates if not kinds or any(k in u for k in kinds)][:max(1, min(limit, 100))]
            elif method == "setMyCommands":
                self.commands, result = payload.get("commands"), True
            elif method == "getMe":
                result = self.BOT
            else:
                result = True
        return Answer(200, json.dumps({"ok": True, "result": result}).encode())

    def _record(self, record: Received) -> None:
        with self._lock:
            self._received.append(record)


# --- sendPhoto (multipart/form-data), the daily report's chart ---------------------------------

CAPTION_LIMIT = 1024


class Photo(NamedTuple):
    chat_id: str
    caption: str
    png: bytes
    content_type: str          # the whole request's Content-Type header
    disable_notification: bool
    status: int


def multipart_fields(content_type: str, raw: bytes) -> dict:
    """{field name: bytes} of a multipart/form-data body, parsed as a server would."""
    from email.parser import BytesParser
    from email.policy import HTTP

    message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + raw)
    if not message.is_multipart():
        return {}
    return {part.get_param("name", header="content-disposition"): part.get_payload(decode=True)
            for part in message.iter_parts()}


def _send_photo(handler, standin, match, raw: bytes):
    content_type = handler.headers.get("Content-Type", "")
    fields = multipart_fields(content_type, raw) if content_type.startswith("multipart/form-data") else {}
    chat_id = (fields.get("chat_id") or b"").decode("utf-8", "replace")
    caption = (fields.get("caption") or b"").decode("utf-8", "replace")
    png = fields.get("photo") or b""
    answer = standin.photo_answer or standin._next_answer(chat_id)
    if answer is None:
        if not png.startswith(b"\x89PNG\r\n\x1a\n"):
            answer = _error(400, "Bad Request: IMAGE_PROCESS_FAILED")
        elif len(caption.encode("utf-16-le")) // 2 > CAPTION_LIMIT:
            answer = _error(400, "Bad Request: message caption is too long")
        else:
            answer = Answer(200, json.dumps({"ok": True, "result": {"message_id": 1, "chat": {"id": chat_id}}}).encode())
    silent = (fields.get("disable_notification") or b"") == b"true"
    with standin._lock:  # kept apart from `received`: the texts' counts stay what they were
        if not hasattr(standin, "photos"):
            standin.photos = []
        standin.photos.append(Photo(chat_id, caption, png, content_type, silent, answer.status))
    return handler._send(answer)
