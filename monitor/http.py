"""Measuring over HTTP: one pooled session per run, and a GET that always ends.

The scraper and quota checks probe with `get`, which never raises anything but
`ProbeError` (a short reason fit for a check message), never holds more than
`max_bytes` of a body, and ends within `timeout` seconds of wall-clock time while
the body is being read. Nothing here judges a status code or a body.

Known limit: until the status line and headers are in, only requests' per-read
timeout applies, so a server trickling its headers a byte at a time (or a DNS lookup
that hangs in getaddrinfo) can outlast `timeout`; the runner's per-check timeout is
the backstop for that case.
"""

import http.cookiejar
import json
import time
from dataclasses import dataclass
from typing import Any, Mapping
from urllib.parse import urljoin, urlsplit

import requests
import urllib3.exceptions
from requests.adapters import HTTPAdapter
from requests.utils import requote_uri

from monitor.net_errors import describe, is_timeout
from monitor.units import format_duration

POOL_SIZE = 64          # connections kept per host: every probe of a run at once
MAX_BYTES = 1_000_000   # a health or quota answer is small; more is read no further
MAX_REDIRECTS = 10
_CHUNK = 64 * 1024
USER_AGENT = "monitor (health probe)"


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
    elapsed: float               # seconds, from the first connect to the last body byte
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


class _ProbeSession(requests.Session):
    # requests reads the whole body of a redirect response (unbounded, no deadline)
    # before following it, even with allow_redirects=False. Declaring that no
    # response redirects stops that; `get` follows redirects itself.
    def get_redirect_target(self, resp):
        return None


def new_session(pool_size: int = POOL_SIZE) -> requests.Session:
    """Return a session for probes: pooled for `pool_size` concurrent requests, no retries.

    One session serves a whole run, shared by every check's thread. Cookies are not
    kept, so one probe's Set-Cookie never reaches another. Probes go direct:
    `trust_env` off means no HTTP(S)_PROXY (a proxy would sit between monitor and a
    scraper on 127.0.0.1) and no ~/.netrc, which requests would otherwise look up
    again on every request (half the CPU of 50 concurrent probes).
    """
    session = _ProbeSession()
    session.trust_env = False
    adapter = HTTPAdapter(pool_connections=16, pool_maxsize=pool_size, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.max_redirects = MAX_REDIRECTS
    session.headers["User-Agent"] = USER_AGENT
    session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
    return session


def get(session: requests.Session | None, url: str, timeout: float, headers: dict | None = None,
        max_bytes: int = MAX_BYTES, clock=time.monotonic) -> Response:
    """Given a URL, return the server's Response within `timeout` seconds.

    `session` comes from `new_session` (a plain requests.Session would read redirect
    bodies whole); None makes a one-off session. Redirects are followed (at most 10);
    the configured `headers` are dropped when a redirect leaves the original scheme,
    host and port, as they may carry API keys. Raise ProbeError with a short reason
    if there is no answer.
    """
    if session is None:
        with new_session(pool_size=1) as own:
            return get(own, url, timeout, headers, max_bytes, clock)
    started = clock()
    deadline = started + timeout
    origin = _origin(url)
    current, hop_headers = url, headers
    for redirects in range(MAX_REDIRECTS + 1):
        remaining = _remaining(deadline, clock, timeout)
        host = _origin(current)[1] or "?"
        try:
            resp = session.get(current, headers=hop_headers, stream=True, allow_redirects=False,
                               timeout=(remaining, remaining))
        except requests.RequestException as exc:
            raise ProbeError(_reason(exc, timeout, host), is_timeout(exc)) from None
        target = requests.Session.get_redirect_target(session, resp)
        if target is None:
            try:
                body, truncated = _read_body(resp, max_bytes, deadline, clock, timeout)
            except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
                raise ProbeError(_reason(exc, timeout, host), is_timeout(exc)) from None
            return Response(resp.status_code, resp.headers, body, truncated,
                            clock() - started, resp.url, redirects)
        resp.close()  # a redirect's body is never read
        if target.startswith("//"):
            target = f"{urlsplit(resp.url).scheme}:{target}"
        try:
            current = urljoin(resp.url, requote_uri(target))
        except ValueError:
            raise ProbeError(f"HTTP {resp.status_code} redirect to an invalid URL") from None
        if _origin(current) != origin:
            hop_headers = None
    raise ProbeError(f"too many redirects (more than {MAX_REDIRECTS})")


def _origin(url: str) -> tuple:
    """Return (scheme, host, port) of `url`. Raise ProbeError if it cannot be parsed."""
    try:
        parts = urlsplit(url)
        return parts.scheme.lower(), (parts.hostname or "").lower(), parts.port
    except ValueError:  # "http://[::1/", "http://host:99999/"
        raise ProbeError("invalid URL") from None


def _remaining(deadline: float, clock, timeout: float) -> float:
    remaining = deadline - clock()
    if remaining <= 0:
        raise ProbeError(f"timed out after {format_duration(timeout)}", timed_out=True)
    return remaining


def _read_body(resp: requests.Response, max_bytes: int, deadline: float, clock,
               timeout: float) -> tuple[bytes, bool]:
    """Read at most `max_bytes` of the body before `deadline`; return it and whether it was cut."""
    raw, parts, size = resp.raw, [], 0
    try:
        while True:
            remaining = _remaining(deadline, clock, timeout)
            # requests' read timeout restarts with every recv(), so a server sending a
            # byte a second would never trip it: each read may only wait for what is
            # left of the deadline, and read1 returns after a single recv().
            limit_socket_wait(raw, remaining)
            chunk = raw.read1(min(_CHUNK, max_bytes + 1 - size), decode_content=True)
            if not chunk:
                return b"".join(parts), False
            if size + len(chunk) > max_bytes:  # one byte past the bound: there is more
                parts.append(chunk[:max_bytes - size])
                return b"".join(parts), True
            parts.append(chunk)
            size += len(chunk)
    finally:
        # A body left unread (cut, or timed out) closes the connection rather than
        # returning it to the pool; a finished one goes back for the next probe.
        resp.close()


def _reason(exc: BaseException, timeout: float, host: str) -> str:
    """The probe's failure in the words every client uses (monitor.net_errors)."""
    return describe(exc, host=host, timeout=timeout, max_redirects=MAX_REDIRECTS)


def limit_socket_wait(raw, seconds: float) -> None:
    """Let the next read on `raw`'s socket wait at most `seconds` (a total deadline's rest)."""
    sock = getattr(getattr(raw, "connection", None), "sock", None)
    if sock is not None:
        try:
            sock.settimeout(max(seconds, 0.001))
        except OSError:
            pass
