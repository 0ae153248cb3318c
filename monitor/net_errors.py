"""One way to say why a request got no answer: "connection refused", "timed out after 5s", ...

The probes (`http.py`), Vault (`vault_secrets.py`) and Telegram (`alerts/telegram.py`)
all turn a requests/urllib3 failure into text here, so the same failure reads the
same wherever it happens. Reasons are built from the exception's type and a few
known fields, never from `str(exc)`: requests and urllib3 quote URLs there, query
strings and Telegram's bot token included.

Imported only where requests already is (a probe, a Vault read, a failed delivery),
so a run without them never loads it.
"""

import errno
import http.client
import socket
import ssl

import requests
import urllib3.exceptions as u3

from monitor.units import format_duration


def describe(exc: BaseException, *, host: str | None = None, timeout: float | None = None,
             max_redirects: int | None = None, ca_option: str | None = None) -> str:
    """Given a requests/urllib3 failure, return a short, secret-free reason.

    `host` names the host a DNS lookup failed for, `timeout` says how long was waited,
    `max_redirects` how many redirects were allowed, `ca_option` the setting that
    makes a certificate trusted (a hint when it was not).
    """
    causes = list(_causes(exc))

    def has(*types):
        return next((c for c in causes if isinstance(c, types)), None)

    timed_out = _timeout_in(causes)
    if timed_out is not None:
        connecting = isinstance(timed_out, (requests.ConnectTimeout, u3.ConnectTimeoutError))
        waited = f" after {format_duration(timeout)}" if timeout is not None else ""
        return f"{'connection ' if connecting else ''}timed out{waited}"
    if has(ssl.SSLError, requests.exceptions.SSLError, u3.SSLError):
        return _tls_reason(causes, ca_option)
    if has(u3.NameResolutionError, socket.gaierror):
        return f"DNS lookup failed for host {host}" if host else "DNS lookup failed"
    if has(ConnectionRefusedError):
        return "connection refused"
    if has(http.client.RemoteDisconnected):  # a ConnectionResetError too, but nothing was reset
        return "the server closed the connection without answering"
    if has(ConnectionResetError):
        return "connection reset by the server"
    os_error = next((c for c in causes if isinstance(c, OSError) and c.errno), None)
    if os_error is not None and os_error.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
        return f"{'network' if os_error.errno == errno.ENETUNREACH else 'host'} unreachable"
    if has(requests.TooManyRedirects):
        return f"too many redirects (more than {max_redirects})" if max_redirects is not None else "too many redirects"
    if has(requests.exceptions.InvalidHeader):
        return "invalid request header value (a line break or control character?)"
    if has(requests.exceptions.InvalidSchema, requests.exceptions.MissingSchema):
        return "unsupported URL (expected http:// or https://)"
    if has(requests.exceptions.InvalidURL, u3.LocationParseError):
        return f"invalid URL for host {host}" if host else "invalid URL"
    if has(requests.exceptions.ContentDecodingError, u3.DecodeError):
        return "could not decode the body (bad Content-Encoding)"
    if has(requests.exceptions.ProxyError, u3.ProxyError):
        return "proxy error (check https_proxy/no_proxy)"
    if has(requests.exceptions.ChunkedEncodingError, u3.ProtocolError, ConnectionAbortedError, EOFError):
        return "connection broken while reading the answer"
    strerror = os_error.strerror if os_error is not None and os_error.strerror else ""
    if has(requests.ConnectionError, u3.NewConnectionError):
        return f"connection failed: {strerror}" if strerror else "connection failed"
    if strerror:  # requests raises OSError for a CA bundle it cannot load
        return strerror[:1].lower() + strerror[1:]
    return f"request failed ({type(exc).__name__})"


def is_timeout(exc: BaseException) -> bool:
    """Whether `exc` is, or wraps, a timeout (urllib3's refused-as-timeout excepted)."""
    return _timeout_in(_causes(exc)) is not None


def _causes(exc: BaseException):
    """Yield `exc` and everything it wraps (urllib3 hides the cause in .reason or args)."""
    seen, stack = set(), [exc]
    while stack:
        current = stack.pop()
        if not isinstance(current, BaseException) or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        stack += [current.__context__, current.__cause__, getattr(current, "reason", None)]
        stack += reversed(getattr(current, "args", ()))


def _timeout_in(causes) -> BaseException | None:
    # urllib3 makes NewConnectionError (refused, unreachable) a ConnectTimeoutError
    # for backward compatibility; it is not a timeout.
    return next((c for c in causes if isinstance(c, (requests.Timeout, u3.TimeoutError, socket.timeout))
                 and not isinstance(c, u3.NewConnectionError)), None)


def _tls_reason(causes, ca_option: str | None) -> str:
    for cause in causes:
        if isinstance(cause, ssl.SSLCertVerificationError):
            why = f": {cause.verify_message}" if cause.verify_message else ""
            return f"TLS certificate not trusted{why}" + (f" (set {ca_option}?)" if ca_option else "")
    for cause in causes:
        if isinstance(cause, ssl.SSLError) and cause.reason:
            if cause.reason == "WRONG_VERSION_NUMBER":
                return "TLS handshake failed (wrong version number): is the server plain http://?"
            return f"TLS error: {cause.reason.lower().replace('_', ' ')}"
    return "TLS error: handshake failed"
