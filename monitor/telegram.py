"""Telegram Bot API client: send one HTML message, and say exactly what happened.

Plain requests, no bot framework. `send` never raises and never sleeps longer than a
few seconds: a 429 whose `retry_after` does not fit the run, a 5xx or a network
error after bounded retries, and a rejected token all come back as an undelivered
`Delivery` for the outbox. The token sits inside the request URL, so every error
text passes through `redact.scrub`, and the token is registered there on creation.
"""

import html
import re
import time
from typing import NamedTuple

from monitor import redact
from monitor.text import printable  # Telegram's answer is an HTTP body: shown printable

LIMIT = 4096  # Telegram's maximum message length, in characters
_PARSE_ERROR = "can't parse entities"


class Delivery(NamedTuple):
    ok: bool
    error: str | None = None          # short, scrubbed reason
    retry_at: float | None = None     # do not try again before this time (429)
    config_error: bool = False        # the token or the chat is wrong: a person must act
    chat_id: str | None = None        # the chat it went to (differs after a migration)
    migrated_from: str | None = None


class TelegramClient:
    """Send messages with `{api_url}/bot{token}/sendMessage`."""

    def __init__(self, token: str, api_url: str = "https://api.telegram.org", timeout: float = 10.0,
                 session=None, sleep=time.sleep, clock=time.time, max_wait: float = 3.0,
                 retries: int = 2):
        import requests

        redact.register(token)
        self._url = f"{api_url.rstrip('/')}/bot{token}/sendMessage"
        self.timeout, self.sleep, self.clock = timeout, sleep, clock
        self.max_wait, self.retries = max_wait, retries
        self.session = session or requests.Session()
        self._requests = requests

    def send(self, chat_id: str, text: str, disable_notification: bool = False,
             parse_mode: str | None = "HTML") -> Delivery:
        """Deliver `text` (already split under LIMIT) to `chat_id`; never raises."""
        plain_retry_done, migrated_from = False, None
        failures, waited = 0, 0.0
        while True:
            payload = {"chat_id": chat_id, "text": text, "disable_notification": disable_notification,
                       "disable_web_page_preview": True}
            if parse_mode:
                payload["parse_mode"] = parse_mode
            try:
                response = self.session.post(self._url, json=payload,
                                             timeout=(min(self.timeout, 5.0), self.timeout))
            except self._requests.RequestException as exc:
                reason = _network_reason(exc)
                if isinstance(exc, self._requests.ReadTimeout):
                    # The whole timeout is already spent (3 tries would hold the run 30 s),
                    # and Telegram may have shown the message: the outbox retries next run.
                    return Delivery(False, f"Telegram unreachable: {reason}", chat_id=chat_id)
                failures += 1
                if failures > self.retries:
                    return Delivery(False, f"Telegram unreachable: {reason}", chat_id=chat_id)
                self.sleep(0.5 * failures)
                continue
            status = response.status_code
            body = _json(response)
            description = printable(redact.scrub(str(body.get("description") or response.reason or "")))[:200]
            params = body.get("parameters") if isinstance(body.get("parameters"), dict) else {}
            if status == 200 and body.get("ok") is True:
                return Delivery(True, chat_id=chat_id, migrated_from=migrated_from)
            if status == 200:
                # Telegram always answers {"ok": true, ...}. Anything else is a proxy or a
                # wrong api_url swallowing alerts: keep the message (a duplicate beats silence).
                return Delivery(False, "the answer to sendMessage was HTTP 200 but not Telegram's "
                                "(is telegram.api_url right? a proxy in the way?)", config_error=True,
                                chat_id=chat_id)
            if status == 429:
                retry_after = _number(params.get("retry_after")) or _number(response.headers.get("Retry-After")) or 1
                if waited + retry_after <= self.max_wait:
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
                                chat_id=chat_id)
            failures += 1
            if failures > self.retries:
                return Delivery(False, f"Telegram {status}: {description or 'server error'}", chat_id=chat_id)
            self.sleep(0.5 * failures)


def _json(response) -> dict:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _number(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


def _network_reason(exc) -> str:
    name = type(exc).__name__
    text = str(exc)
    if "timed out" in text.lower() or "Timeout" in name:
        return "timed out"
    if "refused" in text.lower():
        return "connection refused"
    if "Name or service not known" in text or "getaddrinfo" in text or "resolve" in text.lower():
        return "DNS lookup failed"
    return redact.scrub(f"{name}: {text}")[:200]


# --- text -------------------------------------------------------------------------

_TAG = re.compile(r"<[^>]*>")


def html_to_plain(text: str) -> str:
    """The visible text of a message: tags removed, entities decoded."""
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
