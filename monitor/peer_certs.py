"""Measuring TLS: the peer certificates the run's own connections were shown, and their dates.

The probes' client (`http_loop.py`) and the Vault client (`vault_secrets.py`) hand each
handshake's leaf certificate (DER) or its failure to a `PeerCertificates` of the run
(`checks.Shared.peer_certificates()`); the `tls:<host:port>` checks read it once the
probes are done (`checks/tls.py`). No second connection is made, but on one path: a
certificate the verification refused is not handed over, so the client that was refused
makes one handshake-only connection without verification (`unverified_context`, for
`unverified_leaf` or the probes' loop) to read its dates, within what is left of its own
deadline. Verification itself stays whole: only that leaf is read, never trusted.

`read_der` walks just enough of the DER for the validity, the subject's CN and DNS/IP
names, and the issuer's CN: `cryptography` would cost ~40 ms to import on a cron run,
`ssl._ssl._test_decode_cert` needs a file, and `getpeercert()` is empty without
verification. The bytes come from a server: any malformed structure raises ValueError.
"""

import threading
from typing import NamedTuple

_CN, _SAN = bytes.fromhex("550403"), bytes.fromhex("551d11")  # OIDs 2.5.4.3 and 2.5.29.17
MAX_NAMES = 20  # subject alternative names kept (a CDN's certificate can carry hundreds)


class Certificate(NamedTuple):
    not_before: "datetime"  # aware, UTC
    not_after: "datetime"
    subject_cn: str | None
    names: list           # DNS names and IP addresses from subjectAltName (at most MAX_NAMES)
    names_total: int
    issuer_cn: str | None


def _item(data: bytes, at: int, end: int) -> tuple[int, int, int]:
    """(tag, start of the contents, end of the contents) of the DER item at `at`."""
    if at + 2 > end:
        raise ValueError("truncated DER")
    tag, first = data[at], data[at + 1]
    if tag & 0x1F == 0x1F:
        raise ValueError("multi-byte DER tag")
    at += 2
    if first < 0x80:
        length = first
    else:
        size = first & 0x7F
        if not 0 < size <= 4 or at + size > end:
            raise ValueError("bad DER length")
        length, at = int.from_bytes(data[at:at + size], "big"), at + size
    if at + length > end:
        raise ValueError("DER item runs past its container")
    return tag, at, at + length


def _children(data: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    found = []
    while start < end:
        item = _item(data, start, end)
        found.append(item)
        start = item[2]
    return found


def _time(tag: int, raw: bytes) -> "datetime":
    from datetime import datetime, timezone  # read only when a tls check judges

    text = raw.decode("ascii")
    if tag == 0x17:  # UTCTime YYMMDDHHMMSSZ: 50-99 are 19xx (RFC 5280)
        year = int(text[:2])
        text = f"{1900 + year if year >= 50 else 2000 + year}{text[2:]}"
    elif tag != 0x18:  # GeneralizedTime YYYYMMDDHHMMSSZ
        raise ValueError("validity is not a time")
    if len(text) != 15 or not text.endswith("Z") or not text[:14].isdigit():
        raise ValueError("validity time is not YYYYMMDDHHMMSSZ")
    parts = [int(text[i:i + 2]) for i in range(4, 14, 2)]
    return datetime(int(text[:4]), *parts, tzinfo=timezone.utc)  # ValueError for a 31 February


def _string(tag: int, raw: bytes) -> str:
    if tag == 0x1E:
        return raw.decode("utf-16-be", "replace")
    if tag == 0x1C:
        return raw.decode("utf-32-be", "replace")
    return raw.decode("utf-8" if tag == 0x0C else "latin-1", "replace")


def _common_name(data: bytes, start: int, end: int) -> str | None:
    for _, set_start, set_end in _children(data, start, end):   # RDNSequence: SET OF
        for _, at, stop in _children(data, set_start, set_end):  # AttributeTypeAndValue
            parts = _children(data, at, stop)
            if len(parts) == 2 and data[parts[0][1]:parts[0][2]] == _CN:
                tag, value_start, value_end = parts[1]
                return _string(tag, data[value_start:value_end])
    return None


def _alt_names(data: bytes, start: int, end: int) -> list[str]:
    names = []
    for tag, at, stop in _children(data, start, end):
        if tag == 0x82:  # dNSName
            names.append(data[at:stop].decode("latin-1"))
        elif tag == 0x87 and stop - at in (4, 16):  # iPAddress
            import ipaddress

            names.append(str(ipaddress.ip_address(data[at:stop])))
    return names


def read_der(der: bytes) -> Certificate:
    """Given a DER X.509 certificate, return its validity and names. Raise ValueError if malformed."""
    try:
        _, cert_start, cert_end = _item(der, 0, len(der))
        _, tbs_start, tbs_end = _item(der, cert_start, cert_end)
        fields = _children(der, tbs_start, tbs_end)
        if fields and fields[0][0] == 0xA0:  # [0] version
            fields = fields[1:]
        if len(fields) < 6:
            raise ValueError("too few fields in the certificate")
        issuer, validity, subject = fields[2], fields[3], fields[4]
        times = _children(der, validity[1], validity[2])
        if len(times) != 2:
            raise ValueError("validity is not two times")
        not_before, not_after = (_time(tag, der[at:stop]) for tag, at, stop in times)
        names: list[str] = []
        for tag, at, stop in fields[6:]:
            if tag != 0xA3:  # [3] extensions
                continue
            _, ext_start, ext_end = _item(der, at, stop)
            for _, e_start, e_end in _children(der, ext_start, ext_end):
                parts = _children(der, e_start, e_end)
                if der[parts[0][1]:parts[0][2]] == _SAN:
                    _, value_start, value_end = parts[-1]       # OCTET STRING holding
                    _, seq_start, seq_end = _item(der, value_start, value_end)  # GeneralNames
                    names = _alt_names(der, seq_start, seq_end)
        return Certificate(not_before, not_after, _common_name(der, subject[1], subject[2]),
                           names[:MAX_NAMES], len(names), _common_name(der, issuer[1], issuer[2]))
    except (IndexError, UnicodeError) as exc:
        raise ValueError(f"malformed certificate ({type(exc).__name__})") from None


class Seen(NamedTuple):
    """What the run's connections to one host:port met: the leaf certificate (DER) of the first
    handshake, else why the last attempt failed; `at_tls` is True when the TLS handshake itself
    failed (a certificate not trusted, say), False when the connection never got that far.
    A refusal by the verification (`verify_code` set) may carry the leaf too, read by one
    handshake without verification: then `der` and `failure` are both set."""

    der: bytes | None
    failure: str | None
    at_tls: bool
    verify_code: int | None


class PeerCertificates:
    """The certificates the run's connections were shown, by (host, port); any thread may record."""

    def __init__(self):
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, int], Seen] = {}

    def saw(self, host: str, port: int, der: bytes | None) -> None:
        """Record the leaf certificate of a completed handshake (the first one kept; a refusal
        stays: another entry's `verify = false` does not hide it, and lends its certificate
        to a refusal recorded without one)."""
        if not der:
            return
        with self._lock:
            known = self._seen.get((host.lower(), port))
            if known is None or known.der is None:
                refused = known is not None and known.verify_code is not None
                self._seen[host.lower(), port] = Seen(der, known.failure, True, known.verify_code) if refused \
                    else Seen(der, None, True, None)

    def failed(self, host: str, port: int, reason: str, at_tls: bool, verify_code: int | None = None,
               der: bytes | None = None) -> None:
        """Record a connection that showed no certificate, or (`der`) one the verification
        refused, read without it. A certificate already seen stays, but a refusal wins over a
        plain handshake whatever the order (keeping its certificate when it has none)."""
        with self._lock:
            known = self._seen.get((host.lower(), port))
            if der and verify_code is not None:
                if known is None or known.der is None or known.failure is None:
                    self._seen[host.lower(), port] = Seen(der, reason, True, verify_code)
            elif verify_code is not None and known is not None and known.der is not None:
                if known.failure is None:  # another entry's verify = false handshake showed it
                    self._seen[host.lower(), port] = Seen(known.der, reason, True, verify_code)
            elif known is None or known.der is None and (at_tls or not known.at_tls):
                self._seen[host.lower(), port] = Seen(None, reason, at_tls, verify_code)

    def get(self, host: str, port: int) -> Seen | None:
        with self._lock:
            return self._seen.get((host.lower(), port))


def no_certificate(exc: BaseException) -> tuple[str, int | None, bool]:
    """(a short reason, OpenSSL's verify code or None, whether the TLS handshake had begun) for a
    connection that ended without a certificate. Walks the chain requests and urllib3 wrap it in."""
    import ssl

    chain, stack = [], [exc]
    while stack and len(chain) < 20:
        error = stack.pop()
        if not isinstance(error, BaseException) or any(error is e for e in chain):
            continue
        chain.append(error)
        stack += [error.__cause__, error.__context__, getattr(error, "reason", None),
                  *(a for a in getattr(error, "args", ()) if isinstance(a, BaseException))]
    for error in chain:
        code = getattr(error, "verify_code", None)
        if code is not None:
            return f"certificate verify failed: {getattr(error, 'verify_message', '') or code}", code, True
    at_tls = any(isinstance(e, ssl.SSLError) or type(e).__name__ == "SSLError" for e in chain)
    if any(type(e).__name__ in ("CancelledError", "TimeoutError", "ConnectTimeout", "ReadTimeout",
                                "ConnectTimeoutError") for e in chain):
        return "timed out", None, at_tls
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return " ".join(text.split())[:200], None, at_tls


_unverified: list = []  # the process's context without verification, made on first use
_unverified_lock = threading.Lock()


def unverified_context():
    """A TLS client context that checks nothing: for reading a refused certificate's dates only
    (no CA bundle loaded, no request ever sent over it)."""
    with _unverified_lock:
        if not _unverified:
            import ssl

            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            _unverified.append(context)
        return _unverified[0]


def unverified_leaf(host: str, port: int, seconds: float, clock=None) -> bytes | None:
    """The leaf certificate (DER) host:port shows in a handshake without verification, or None
    (unreachable, no TLS, out of time). Blocking, for the Vault client's failure path: every
    socket call gets what is left of `seconds` (the name lookup excepted: the refused request
    has just made it); through the environment's proxy as requests goes (a CONNECT tunnel)."""
    import time

    from monitor import rawhttp

    clock = clock or time.monotonic
    end = clock() + seconds

    def left() -> float:
        if (remaining := end - clock()) <= 0:
            raise TimeoutError("out of time")
        return remaining

    try:
        left()
        proxy = rawhttp.proxy_for("https", host, port)
        via = (proxy.host, proxy.port) if proxy else (host, port)
        sock = rawhttp._connect(rawhttp.resolve(*via), left)
        try:
            if proxy:
                rawhttp._tunnel(sock, host, port, proxy, left)
            sock.settimeout(left())
            tls = unverified_context().wrap_socket(sock, server_hostname=host)
            try:
                return tls.getpeercert(binary_form=True)
            finally:
                tls.close()
        finally:
            sock.close()
    except (OSError, ValueError):  # TimeoutError and ssl.SSLError are OSErrors
        return None
