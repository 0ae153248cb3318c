"""One small HTTP/1.1 exchange over a plain socket, for a cron run's calls that need no HTTP stack.

The heartbeat pings and the Bot API calls but sendMessage carry a few hundred bytes each
way, where requests or http.client would cost a run 30-100 ms of imports (email, ssl,
urllib3) and `socket` ~4 ms of enums: this writes over `_socket`, the C core (~0.5 ms).
ssl and the CA bundle (~25 ms) load for https only, once per process. One deadline bounds
every step but the name lookup, each socket call getting what is left of it, so a
trickling peer is cut. No error text made here holds the URL (a ping key, the bot token).

Proxies as requests (and curl) read them from the environment: `https_proxy`, `http_proxy`,
`all_proxy` (lower case first), `no_proxy`; an http:// proxy only. An https URL goes through
a CONNECT tunnel, an http one as an absolute-form request to the proxy.
"""

import os
import threading
import time

HEAD_ROOM = 16 * 1024  # bytes read while looking for the end of the status line and headers
_CHUNKED = -1  # the body's length when it comes in chunks


class Reply:
    """An answer: status (0: the status line is not HTTP's), lower-cased headers, body (de-chunked;
    empty when too_big: over max_bytes, not read further). A NamedTuple would cost ~0.2 ms to make."""
    __slots__ = ("status", "headers", "body", "too_big")

    def __init__(self, status: int, headers: dict, body: bytes, too_big: bool = False):
        self.status, self.headers, self.body, self.too_big = status, headers, body, too_big


class Incomplete(ConnectionError):
    """The answer's head never ended: the connection closed first, or it outgrew HEAD_ROOM."""


def split_url(url: str) -> tuple[str, str, int, str, str]:
    """(scheme, host, port, host[:port] for the Host header, path?query) of an http(s) URL, split
    by hand (urllib.parse costs ~4 ms of imports). Raises ValueError, whose text never holds the URL."""
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in ("http", "https"):
        raise ValueError("not an http(s) URL")
    cut = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    authority, target = rest[:cut].rsplit("@", 1)[-1], rest[cut:].split("#", 1)[0]
    target = target if target.startswith("/") else "/" + target
    if authority.startswith("["):  # [IPv6]:port
        host, _, after = authority[1:].partition("]")
        port_text = after[1:] if after.startswith(":") else ""
    else:
        host, _, port_text = authority.partition(":")
    if not host:
        raise ValueError("no host in the URL")
    if port_text and not (port_text.isdigit() and 0 < int(port_text) < 65536):
        raise ValueError("bad port in the URL")
    port = int(port_text) if port_text else (443 if scheme == "https" else 80)
    return scheme, host, port, authority, target


def describe(exc: BaseException) -> str:
    """A failed exchange in a few words, never the URL: the system's reason ("Connection
    refused", "Name or service not known"), else the error's own text (this module's name no URL)."""
    if isinstance(exc, ConnectionRefusedError):  # net_errors' wording, as the Telegram failures say it
        return "connection refused"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return f"{exc}" or type(exc).__name__


def resolve(host: str, port: int) -> list:
    """getaddrinfo's TCP answers for host:port: a DNS lookup, which no timeout bounds."""
    import _socket

    # A str host is encoded with the idna codec (three more modules to import); ASCII needs none.
    return _socket.getaddrinfo(host.encode() if host.isascii() else host, port, 0, _socket.SOCK_STREAM)


_tls: list = []  # the process's TLS context, made on first use
_tls_lock = threading.Lock()


def request(method: str, url: str, body: bytes = b"", headers: dict | None = None, timeout: float = 5.0,
            max_bytes: int = 64 * 1024, clock=time.monotonic, status_only: bool = False,
            addresses: dict | None = None, resolve=resolve, tls: list | None = None, hold: dict | None = None) -> Reply:
    """Send one request; return its Reply within `timeout` (with `status_only`, the status alone,
    and a ValueError when the answer is not HTTP).

    `addresses` keeps the lookup's answers by (host, port) for the next call; `tls` the TLS
    context (default: the process's); `hold["sock"]` is the socket, for a thread giving up on
    this one to shut. Raises TimeoutError, Incomplete and other OSErrors, or ValueError."""
    end = clock() + timeout

    def left() -> float:
        if (remaining := end - clock()) <= 0:
            raise TimeoutError(f"no answer within {timeout:g}s")
        return remaining

    scheme, host, port, authority, target = split_url(url)
    proxy = proxy_for(scheme, host, port)
    fields = {"Host": authority, **(headers or {}), "Connection": "close"}
    if body or method not in ("GET", "HEAD"):
        fields["Content-Length"] = len(body)
    if proxy and scheme == "http":  # the proxy reads the whole URL (no tunnel for plain HTTP)
        target = f"http://{authority}{target}"
        if proxy.auth:
            fields["Proxy-Authorization"] = proxy.auth
    head = f"{method} {target} HTTP/1.1\r\n" + "".join(f"{name}: {value}\r\n" for name, value in fields.items())
    via = (proxy.host, proxy.port) if proxy else (host, port)
    addresses = {} if addresses is None else addresses
    if via not in addresses:
        addresses[via] = resolve(*via)
    hold = {} if hold is None else hold
    sock = hold["sock"] = _connect(addresses[via], left)
    try:
        if scheme == "https":
            if proxy:
                _tunnel(sock, host, port, proxy, left)
            sock.settimeout(left())
            with _tls_lock:
                if not (cache := _tls if tls is None else tls):
                    import ssl
                    cache.append(ssl.create_default_context())
            sock = hold["sock"] = cache[0].wrap_socket(sock, server_hostname=host)
        sock.settimeout(left())
        sock.sendall((head + "\r\n").encode("ascii") + body)
        return read(sock, left, max_bytes, status_only)
    finally:
        sock.close()


class Proxy:
    """An http:// proxy: where it listens, and its Proxy-Authorization value (None without credentials)."""
    __slots__ = ("host", "port", "auth")

    def __init__(self, host: str, port: int, auth: str | None):
        self.host, self.port, self.auth = host, port, auth


def proxy_for(scheme: str, host: str, port: int, env=None) -> Proxy | None:
    """The proxy the environment names for scheme://host:port, read as urllib and requests read
    it; None to go direct. Raises ValueError (naming no credentials) for a proxy that is not http://."""
    env = os.environ if env is None else env

    def var(name: str) -> str:
        # Lower case wins, even empty (urllib); HTTP_PROXY is a request header's under CGI (httpoxy).
        if name in env:
            return env[name]
        return "" if name == "http_proxy" and "REQUEST_METHOD" in env else env.get(name.upper(), "")

    url = (var(f"{scheme}_proxy") or var("all_proxy")).strip()
    if not url or _bypass(host, port, var("no_proxy")):
        return None
    kind, sep, rest = url.partition("://")
    if not sep:
        kind, rest = "http", url
    if kind.lower() != "http":
        raise ValueError(f"proxy scheme {kind[:10]!r} is not supported (an http:// proxy only)")
    rest = rest.split("/", 1)[0]
    userinfo, at, authority = rest.rpartition("@")
    try:
        _, proxy_host, proxy_port, _, _ = split_url(f"http://{authority}")
    except ValueError:
        raise ValueError("the proxy URL has no host or a bad port") from None
    auth = None
    if at:
        import base64
        from urllib.parse import unquote

        user, _, password = userinfo.partition(":")
        auth = "Basic " + base64.b64encode(f"{unquote(user)}:{unquote(password)}".encode()).decode()
    return Proxy(proxy_host, proxy_port, auth)


def _bypass(host: str, port: int, no_proxy: str) -> bool:
    """Whether `no_proxy` (comma-separated names, .domains, IPs, CIDR ranges, `*`) names host[:port]."""
    host = host.lower().strip("[]")
    for name in (entry.strip().lower() for entry in no_proxy.split(",")):
        if name == "*":
            return True
        if "/" in name:  # a CIDR range, for an IP host (requests')
            import ipaddress

            try:
                if ipaddress.ip_address(host) in ipaddress.ip_network(name, strict=False):
                    return True
            except ValueError:
                pass
            continue
        name = name.lstrip(".")
        if name.startswith("[") or name.count(":") == 1:  # host:port
            name, _, only = name.rpartition(":")
            if only != str(port):
                continue
        name = name.strip("[]")
        if name and (host == name or host.endswith("." + name)):
            return True
    return False


def _tunnel(sock, host: str, port: int, proxy: Proxy, left) -> None:
    """Ask the proxy for a tunnel to host:port (CONNECT); raise ConnectionError unless it says 2xx."""
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    head = f"CONNECT {where} HTTP/1.1\r\nHost: {where}\r\n"
    if proxy.auth:
        head += f"Proxy-Authorization: {proxy.auth}\r\n"
    sock.settimeout(left())
    sock.sendall((head + "\r\n").encode("ascii"))
    raw = b""
    while b"\r\n\r\n" not in raw:  # the tunnel starts right after the head: read no further
        sock.settimeout(left())
        data = sock.recv(1)
        if not data or len(raw) > HEAD_ROOM:
            raise Incomplete(f"the proxy {proxy.host}:{proxy.port} closed or sent no whole answer to CONNECT")
        raw += data
    line = raw.split(b"\r\n", 1)[0].decode("latin-1")
    status = _status(line)
    if not 200 <= status < 300:
        from monitor.text import clip

        raise ConnectionError(f"the proxy {proxy.host}:{proxy.port} refused the tunnel: "
                              f"{clip(line, 80) if status else 'not an HTTP answer'}")


def _connect(found: list, left):
    """A TCP connection to the first address that answers (socket.create_connection's loop)."""
    import _socket

    error = OSError("no address to connect to")
    for family, kind, proto, _, address in found:
        sock = _socket.socket(family, kind, proto)
        try:
            sock.settimeout(left())
            sock.connect(address)
            return sock
        except OSError as exc:
            sock.close()
            error = exc
    raise error


def read(sock, left, max_bytes: int, status_only: bool = False) -> Reply:
    """The answer on `sock`, read to its end or past `max_bytes` of body, each read within `left()`."""
    raw, head = bytearray(), None
    while head is None or not _ended(raw, head, max_bytes):
        sock.settimeout(left())
        piece = sock.recv(16 * 1024)
        if not piece:
            break
        raw += piece
        if head is None:
            end = raw.find(b"\r\n" if status_only else b"\r\n\r\n", max(0, len(raw) - len(piece) - 3))
            if end >= 0 and status_only:
                if not (status := _status(raw[:end].decode("latin-1"))):
                    raise ValueError("the answer is not HTTP")
                return Reply(status, {}, b"")
            if end >= 0:
                head = _head(raw, end)
            elif len(raw) > HEAD_ROOM:
                raise Incomplete(f"no end of the headers in the first {HEAD_ROOM // 1024} KB")
    return parse(bytes(raw), max_bytes)


def parse(raw: bytes, max_bytes: int) -> Reply:
    """The Reply in an answer's bytes. Raises Incomplete when its head never ended."""
    if (end := raw.find(b"\r\n\r\n")) < 0:
        raise Incomplete("the connection closed")
    status, headers, start, length = _head(raw, end)
    body = _unchunk(raw[start:])[0] if length == _CHUNKED else raw[start:None if length is None else start + length]
    if len(body) > max_bytes or (length or 0) > max_bytes:
        return Reply(status, headers, b"", too_big=True)
    return Reply(status, headers, body)


def _ended(raw, head, max_bytes: int) -> bool:
    """Whether `raw` holds the whole answer, or more of its body than is read."""
    size, length = len(raw) - head[2], head[3]
    if length == _CHUNKED:  # the chunks' framing may take up to HEAD_ROOM on top of the cap
        return size > max_bytes + HEAD_ROOM or raw.endswith(b"\r\n\r\n") and _unchunk(raw[head[2]:])[1]
    return size > max_bytes if length is None else size >= length or length > max_bytes


def _head(raw, end: int) -> tuple[int, dict, int, int | None]:
    """(status, lower-cased headers, where the body starts, its length or _CHUNKED or None: to the close)."""
    lines = bytes(raw[:end]).decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
    length = _number(headers.get("content-length", ""))
    if "chunked" in headers.get("transfer-encoding", "").lower():
        length = _CHUNKED
    return _status(lines[0]), headers, end + 4, length


def _status(line: str) -> int:
    fields = line.split(None, 2)
    ok = len(fields) >= 2 and fields[0].startswith("HTTP/") and len(fields[1]) == 3
    return (_number(fields[1]) or 0) if ok else 0


def _number(text: str) -> int | None:
    return int(text) if text.isascii() and text.isdigit() else None


def _unchunk(data: bytes) -> tuple[bytes, bool]:
    """(the chunks' data, whether the last chunk came); a size that is not a number ends it empty."""
    out, pos = [], 0
    while (end := data.find(b"\r\n", pos)) >= 0:
        try:
            size = int(data[pos:end].split(b";")[0], 16)
        except ValueError:
            return b"", True
        if size <= 0:
            return b"".join(out), True
        out.append(data[end + 2:end + 2 + size])
        pos = end + 2 + size + 2
    return b"".join(out), False
