"""Measuring over HTTP: one event loop per run for every probe, and a GET that always ends.

The scraper and quota checks probe with `get`, which never raises anything but
`ProbeError` (a short reason fit for a check message), never holds more than
`max_bytes` of a body, and ends within `timeout` seconds of wall-clock time once its
connection has a slot (DNS, connect, headers and body alike). Nothing here judges a
status code or a body. The client underneath is `monitor/http_loop.py` (asyncio): one
loop thread, sockets bounded by the fd limit, latency read off the socket side.
"""

import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Mapping
from urllib.parse import urljoin, urlsplit

from monitor import http_loop
from monitor.units import format_duration

MAX_BYTES = 1_000_000   # a health or quota answer is small; more is read no further
MAX_REDIRECTS = 10
USER_AGENT = "monitor (health probe)"
_DEFAULT_PORTS = {"http": 80, "https": 443}
# With -vv, one line per request, as urllib3 wrote them (masked by the console's redacting filter).
_log = logging.getLogger("probes.http")


class ProbeError(Exception):
    """A request that got no usable answer; `str()` is a short, secret-free reason."""

    def __init__(self, reason: str, timed_out: bool = False):
        super().__init__(reason)
        self.reason, self.timed_out = reason, timed_out


@dataclass(frozen=True)
class Response:
    """What a server answered: status, headers, the body (cut at `max_bytes`), time taken."""

    status: int
    headers: Mapping[str, str]   # case-insensitive
    body: bytes
    truncated: bool              # the body went on past `max_bytes` and was not read further
    elapsed: float               # seconds the server took: each hop's handshake and request-to-last-byte
    url: str                     # after redirects
    redirects: int = 0

    def json(self) -> Any:
        """Return the body parsed as JSON. Raise ValueError if it is not JSON (or cut short)."""
        if self.truncated:
            raise ValueError(f"body larger than {len(self.body)} bytes, not parsed")
        try:
            return json.loads(self.body)
        except RecursionError:  # "[[[[..." nested a million deep
            raise ValueError("JSON nested too deeply") from None


def json_field(document: Any, path: str) -> Any:
    """Follow a dotted path ("data.status", "items.0.ok") through JSON objects and arrays.

    Raise KeyError(path) if some step is absent.
    """
    current = document
    for part in path.split("."):
        if isinstance(current, dict) and part in current:
            current = current[part]
        elif isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        else:
            raise KeyError(path)
    return current


def new_session(limit: int | None = None, certificates=None) -> http_loop.Prober:
    """Return the probes' client for a run: one loop, at most `limit` sockets (default: the fd budget).

    One serves a whole run, shared by every check's thread (`with` closes it). Cookies
    are not kept, so one probe's Set-Cookie never reaches another. Probes go direct: no
    HTTP(S)_PROXY (a proxy would sit between monitor and a scraper on 127.0.0.1) and no
    ~/.netrc. With `certificates` (a `peer_certs.PeerCertificates`), each TLS handshake's
    leaf certificate is recorded there, for the `tls:<host:port>` checks.
    """
    return http_loop.Prober(limit, certificates)


def get(session: http_loop.Prober | None, url: str, timeout: float, headers: dict | None = None,
        max_bytes: int = MAX_BYTES, tls: tuple | None = None) -> Response:
    """Given a URL, return the server's Response within `timeout` seconds.

    `session` comes from `new_session`; None makes a one-off one. Redirects are followed
    (at most 10); the configured `headers` are dropped when a redirect leaves the original
    scheme, host and port, as they may carry API keys. `elapsed` runs from the first
    connect to the last body byte as the loop read it (a wait for a free socket slot is
    not the server's, nor is the deadline's). `tls`: (verify, CA bundle path or "") for
    https, as `tls_settings` gives it from a config entry. Raise ProbeError with a short
    reason if there is no answer.
    """
    if session is None:
        with new_session(limit=4) as own:
            return get(own, url, timeout, headers, max_bytes, tls)
    return start(session, url, timeout, headers, max_bytes, tls).result()


def tls_settings(cfg: dict) -> tuple:
    """(verify, CA bundle path or "") of a [[scrapers]] or [[quotas]] entry."""
    return bool(cfg.get("verify", True)), cfg.get("ca_cert") or ""


def start(session: http_loop.Prober, url: str, timeout: float, headers: dict | None = None,
          max_bytes: int = MAX_BYTES, tls: tuple | None = None):
    """Start `get` on the session's loop without waiting: a concurrent Future of the Response.

    Its `result()` raises ProbeError as `get` does. The caller's thread is free meanwhile.
    """
    return session.submit(_get(session, url, timeout, headers, max_bytes, tls or (True, "")))


async def _get(session, url, timeout, headers, max_bytes, tls) -> Response:
    origin = _origin(url)
    current, hop_headers = url, _checked_headers(headers)
    deadline, elapsed = None, 0.0
    for redirects in range(MAX_REDIRECTS + 1):
        scheme, host, port, head = _request(current, hop_headers)
        remaining = timeout if deadline is None else _remaining(deadline, timeout)
        try:
            answer = await session.fetch(scheme, host, port, head, max_bytes, remaining, tls)
        except http_loop.Failure as exc:
            raise ProbeError(_reason(exc, timeout, host), exc.timed_out) from None
        if deadline is None:
            # The deadline runs from getting a socket slot: waiting for one was not the server's time.
            deadline = answer.slotted + timeout
        elapsed += answer.latency
        if _log.isEnabledFor(logging.DEBUG):
            _log.debug('"GET %s HTTP/1.1" %s %d bytes in %.1f ms', current, answer.status, len(answer.body),
                       answer.latency * 1000)
        location = answer.headers.get("location") if answer.status in http_loop.REDIRECTS else None
        if location is None:
            return Response(answer.status, answer.headers, answer.body, answer.truncated,
                            elapsed, current, redirects)
        try:
            target = location.encode("latin-1").decode("utf-8")
        except UnicodeError:
            target = location
        if target.startswith("//"):
            target = f"{scheme}:{target}"
        try:
            current = urljoin(current, _requote(target))
        except ValueError:
            raise ProbeError(f"HTTP {answer.status} redirect to an invalid URL") from None
        if _origin(current) != origin:
            hop_headers = None
    raise ProbeError(f"too many redirects (more than {MAX_REDIRECTS})")


def _checked_headers(headers: dict | None) -> list | None:
    """The configured headers as (name, value) lines. Raise ProbeError for one that cannot be sent."""
    if not headers:
        return None
    lines = []
    for name, value in headers.items():
        text = f"{name}{value}"
        if any(ord(c) < 32 and c != "\t" or ord(c) == 127 for c in text) or not name.strip():
            raise ProbeError("invalid request header value (a line break or control character?)")
        try:
            lines.append((name.encode("latin-1"), str(value).strip().encode("latin-1")))
        except UnicodeEncodeError:
            raise ProbeError("invalid request header value (not Latin-1 text)") from None
    return lines


def _request(url: str, extra: list | None) -> tuple:
    """(scheme, host, port, request head bytes) for a GET of `url`. Raise ProbeError if it cannot be sent."""
    scheme, host, port = _origin(url)
    if scheme not in _DEFAULT_PORTS:
        raise ProbeError("unsupported URL (expected http:// or https://)")
    if not host:
        raise ProbeError("invalid URL")
    parts = urlsplit(url)
    target = _requote(parts.path or "/") + (f"?{_requote(parts.query)}" if parts.query else "")
    try:
        wire_host = host.encode("ascii").decode() if host.isascii() else host.encode("idna").decode()
    except UnicodeError:
        raise ProbeError(f"invalid URL for host {host}") from None
    port = port or _DEFAULT_PORTS[scheme]
    shown = f"[{wire_host}]" if ":" in wire_host else wire_host
    host_header = shown if port == _DEFAULT_PORTS[scheme] else f"{shown}:{port}"
    fixed = {b"host": (b"Host", host_header.encode()), b"user-agent": (b"User-Agent", USER_AGENT.encode()),
             b"accept-encoding": (b"Accept-Encoding", b"gzip, deflate"), b"accept": (b"Accept", b"*/*"),
             b"connection": (b"Connection", b"close")}
    for name, value in extra or ():
        fixed[name.lower()] = (name, value)  # a configured header replaces a default one
    head = b"GET " + target.encode("ascii") + b" HTTP/1.1\r\n" + b"".join(
        name + b": " + value + b"\r\n" for name, value in fixed.values()) + b"\r\n"
    return scheme, wire_host, port, head


def _requote(text: str) -> str:
    """`text` as it may stand in a request line: what needs quoting quoted (as requests did)."""
    if text.isascii() and text.isprintable() and " " not in text and '"' not in text:
        return text
    from requests.utils import requote_uri  # only for an unusual URL

    return requote_uri(text).encode("ascii", "replace").decode()


def _origin(url: str) -> tuple:
    """Return (scheme, host, port) of `url`. Raise ProbeError if it cannot be parsed."""
    try:
        parts = urlsplit(url)
        return parts.scheme.lower(), (parts.hostname or "").lower(), parts.port
    except ValueError:  # "http://[::1/", "http://host:99999/"
        raise ProbeError("invalid URL") from None


def _remaining(deadline: float, timeout: float) -> float:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise ProbeError(f"timed out after {format_duration(timeout)}", timed_out=True)
    return remaining


def _reason(failure: http_loop.Failure, timeout: float, host: str) -> str:
    """The probe's failure in the words every client uses (monitor.net_errors)."""
    if failure.timed_out:
        return f"{'connection ' if failure.reason == 'connection' else ''}timed out after {format_duration(timeout)}"
    if failure.cause is None:
        return failure.reason or "request failed"
    from monitor.net_errors import describe  # loads requests: only when a probe failed

    return describe(failure.cause, host=host, timeout=timeout, max_redirects=MAX_REDIRECTS)


def limit_socket_wait(raw, seconds: float) -> None:
    """Let the next read on `raw`'s socket wait at most `seconds` (a total deadline's rest)."""
    sock = getattr(getattr(raw, "connection", None), "sock", None)
    if sock is not None:
        try:
            sock.settimeout(max(seconds, 0.001))
        except OSError:
            pass
