"""The probes' HTTP/1.1 client: one asyncio loop per run, connections bounded by the fd limit.

A `Prober` runs an event loop in one daemon thread; a check's thread hands it a GET
(`Prober.get`) and waits for the answer. At most `limit` requests hold a socket at a
time (sized to RLIMIT_NOFILE, raised to its hard limit first where allowed), so 2 000
scrapers under `ulimit -n 1024` wait for a slot instead of failing with "Too many open
files". A probe's clock starts when its connection is being opened, after any wait for a
slot, and stops when the loop reads the last byte of the body, before any parsing: the
latency is the scraper's, not monitor's queueing. One request head per URL is built
from bytes, the TLS context is made once per run, DNS is asked once per host and port.

Nothing here judges an answer; `monitor.http.get` is the interface (its doc says what a
GET promises: bounded body, total deadline, redirects, headers dropped across origins).
"""

import asyncio
import os
import resource
import socket
import threading
import time
import zlib
from collections.abc import Mapping

RESERVE_FDS = 64    # files the rest of the run may open while probes hold sockets
MIN_SLOTS = 8
HEAD_LIMIT = 64 * 1024  # status line and headers; more is not an HTTP health answer
_CHUNK = 64 * 1024
_NO_BODY = (204, 304)
REDIRECTS = (301, 302, 303, 307, 308)
# Kept back from a probe's deadline when reading a refused certificate (after the refusal is
# recorded, out of the deadline's scope): the probe's failure reaches its check in its time.
PEEK_MARGIN = 0.1


class Failure(Exception):
    """A GET that got no usable answer: `reason` is final text, or `cause` an exception to describe."""

    def __init__(self, reason: str | None = None, cause: BaseException | None = None, timed_out=False):
        super().__init__(reason)
        self.reason, self.cause, self.timed_out = reason, cause, timed_out


class Answer:
    __slots__ = ("status", "headers", "body", "truncated", "slotted", "connected", "latency")


def raise_fd_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit where allowed; return the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 1 << 20) if soft != resource.RLIM_INFINITY else soft
    if soft != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard if hard else soft))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


def connection_budget(soft: int | None = None) -> int:
    """How many sockets the probes may hold at once: the fd limit less what is open and a reserve."""
    if soft is None:
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    try:
        in_use = len(os.listdir("/proc/self/fd"))
    except OSError:
        in_use = 32
    return max(MIN_SLOTS, soft - in_use - RESERVE_FDS)


class Prober:
    """One event loop serving every probe of a run; `get` may be called from any thread."""

    def __init__(self, limit: int | None = None, certificates=None):
        self.limit = limit if limit is not None else connection_budget(raise_fd_limit())
        self.loop = asyncio.new_event_loop()
        self._slots = None
        self._dns: dict = {}
        self._tls: dict = {}
        self.certificates = certificates  # peer_certs.PeerCertificates: what each handshake showed
        self._peeked: set = set()  # (host, port) whose refused certificate was read (or is being)
        self._thread = threading.Thread(target=self.loop.run_forever, name="probes", daemon=True)
        self._thread.start()

    def submit(self, coroutine):
        """Run `coroutine` on the loop; return a concurrent Future of its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    def close(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(2)
        if not self.loop.is_running():
            self.loop.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # --- in the loop ------------------------------------------------------------------

    async def fetch(self, scheme, host, port, head, max_bytes, timeout, tls=(True, "")) -> Answer:
        """Send `head` to host:port and read the answer within `timeout` s of getting a slot.
        `tls`: (verify, CA bundle path or "" for certifi's) for an https URL."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.limit)
        async with self._slots:
            writer = None
            answer = Answer()
            answer.slotted, answer.connected = time.monotonic(), None
            deadline = self.loop.time() + timeout
            try:
                async with asyncio.timeout_at(deadline):
                    reader, writer, handshake = await self._connect(scheme, host, port, tls)
                    answer.connected = True
                    # Noted before the write: a thread preempted right after it would note
                    # the time late and report less than the server took.
                    sent = time.monotonic()
                    writer.write(head)  # a small write on a fresh socket: sent now, in this call
                    await _read_answer(reader, answer, max_bytes)
                    # The server's time: the handshake, then from the request sent to the
                    # moment the loop took in the last byte (in data_received, before any
                    # other probe's parsing); not the loop's own turns in between.
                    answer.latency = handshake + max(0.0, (reader.last_data or time.monotonic()) - sent)
            except TimeoutError:
                raise Failure(cause=None, timed_out=True, reason="connection" if answer.connected is None
                              else "read") from None
            except (OSError, EOFError) as exc:  # first: a certificate error is a ValueError too
                if (refused_at := getattr(exc, "unverified_from", None)) is not None:
                    # Out of the deadline's scope: a lagging loop firing both timers at once
                    # can no longer turn the refusal (already recorded) into "timed out".
                    await self._read_refused(host, port, exc, *refused_at, deadline)
                raise Failure(cause=exc) from None
            except (asyncio.LimitOverrunError, ValueError):  # a chunk-size line without end, ...
                raise Failure("connection broken while reading the answer") from None
            finally:
                if writer is not None:
                    writer.transport.abort()  # one request per connection: no half-read reuse
            return answer

    async def _connect(self, scheme, host, port, tls_settings=(True, "")):
        """(reader, writer, handshake seconds) of a new connection to host:port. A certificate
        the verification refused is recorded at once; the first refusal of a target carries
        `unverified_from` (family, address) for `fetch` to read that certificate by
        `_read_refused`, after the probe's own deadline scope."""
        try:
            infos = await self._resolve(host, port)
        except BaseException as exc:
            self._no_certificate(scheme, host, port, exc, at_tls=False)
            raise
        last, sock = None, None
        for family, address in infos:  # each address in turn, as create_connection does
            started = time.monotonic()
            try:
                sock = socket.socket(family, socket.SOCK_STREAM)
            except OSError as exc:
                last = exc
                continue
            try:
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                await self.loop.sock_connect(sock, address)
                break
            except BaseException as exc:
                sock.close()
                sock = None
                if not isinstance(exc, OSError):
                    self._no_certificate(scheme, host, port, exc, at_tls=False)
                    raise
                last = exc
        if sock is None:
            self._no_certificate(scheme, host, port, last, at_tls=False)
            raise last or OSError("no address")
        handshake = _tcp_rtt(sock)
        if handshake is None:
            handshake = time.monotonic() - started
        tls = self._tls_context(*tls_settings) if scheme == "https" else None
        reader = _TimedReader(limit=HEAD_LIMIT, loop=self.loop)
        protocol = asyncio.StreamReaderProtocol(reader, loop=self.loop)
        before_tls = time.monotonic()
        try:
            transport, _ = await self.loop.create_connection(
                lambda: protocol, sock=sock, ssl=tls, server_hostname=host if tls else None)
        except BaseException as exc:
            sock.close()
            self._no_certificate(scheme, host, port, exc, at_tls=True)  # first: never lost to the read
            if getattr(exc, "verify_code", None) is not None and self.certificates is not None \
                    and (host, port) not in self._peeked:
                self._peeked.add((host, port))
                exc.unverified_from = (family, address)
            raise
        if tls is not None:
            handshake += time.monotonic() - before_tls
            if self.certificates is not None:
                peer = transport.get_extra_info("ssl_object")
                self.certificates.saw(host, port, peer.getpeercert(binary_form=True) if peer else None)
        return reader, asyncio.StreamWriter(transport, protocol, reader, self.loop), handshake

    async def _resolve(self, host, port):
        key = (host, port)
        found = self._dns.get(key)
        if found is None:
            found = self._dns[key] = asyncio.ensure_future(self._lookup(host, port))
        try:
            return await asyncio.shield(found)
        except BaseException:
            if found.done():
                self._dns.pop(key, None)  # a failed lookup is asked again by the next probe
            raise

    async def _lookup(self, host, port):
        try:
            socket.inet_pton(socket.AF_INET, host)
            return [(socket.AF_INET, (host, port))]
        except OSError:
            pass
        infos = await self.loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        return [(family, address) for family, _, _, _, address in infos]

    def _no_certificate(self, scheme, host, port, exc, at_tls: bool, der=None) -> None:
        if self.certificates is not None and scheme == "https":
            from monitor.peer_certs import no_certificate

            reason, code, _ = no_certificate(exc)
            self.certificates.failed(host, port, reason, at_tls, code, der)

    async def _read_refused(self, host, port, exc, family, address, deadline) -> None:
        """Read the certificate `exc` refused by one handshake without verification, within
        `deadline` (the loop's time) less PEEK_MARGIN, and record it with the refusal. Out of
        time or cancelled: left for the target's next refused probe to read."""
        left = deadline - self.loop.time() - PEEK_MARGIN
        if left <= 0:  # the loop lagged past it: the refusal alone stands
            self._peeked.discard((host, port))
            return
        try:
            der = await self._unverified_leaf(family, address, host, left)
        except BaseException:  # cancelled: its failures are None
            self._peeked.discard((host, port))
            raise
        if der is not None:
            self._no_certificate("https", host, port, exc, at_tls=True, der=der)

    async def _unverified_leaf(self, family, address, host, seconds) -> bytes | None:
        """The leaf certificate of one handshake without verification (a refused certificate's
        dates: the refusal hands none over) within `seconds`, or None."""
        from monitor.peer_certs import unverified_context

        sock = None
        try:
            async with asyncio.timeout(seconds):
                sock = socket.socket(family, socket.SOCK_STREAM)  # EMFILE: None, as any failure
                sock.setblocking(False)
                await self.loop.sock_connect(sock, address)
                transport, _ = await self.loop.create_connection(
                    asyncio.Protocol, sock=sock, ssl=unverified_context(), server_hostname=host)
                try:
                    peer = transport.get_extra_info("ssl_object")
                    return peer.getpeercert(binary_form=True) if peer else None
                finally:
                    transport.abort()
        except (OSError, TimeoutError, ValueError):  # ssl.SSLError is an OSError
            return None
        finally:
            if sock is not None:
                sock.close()

    def _tls_context(self, verify: bool = True, cafile: str = ""):
        """One context per (verify, CA bundle) in a run: certifi's bundle unless `cafile` is given."""
        key = (bool(verify), cafile or "")
        if key not in self._tls:
            import ssl

            if not cafile:
                try:  # the bundle requests used, so the same servers are trusted
                    import certifi

                    cafile = certifi.where()
                except ImportError:
                    cafile = None
            context = ssl.create_default_context(cafile=cafile)
            if not verify:  # the operator's choice for a lab: the certificate is still read
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            self._tls[key] = context
        return self._tls[key]


class _TimedReader(asyncio.StreamReader):
    """A StreamReader that notes when data last came in (called as the socket is read)."""

    last_data = None

    def feed_data(self, data):
        self.last_data = time.monotonic()
        super().feed_data(data)


def _tcp_rtt(sock) -> float | None:
    """The kernel's round-trip time of the TCP handshake just made (TCP_INFO tcpi_rtt), in s."""
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    except (OSError, AttributeError):  # not Linux: the connect's wall time stands in
        return None
    if len(info) < 104:
        return None
    rtt, retransmitted = int.from_bytes(info[68:72], "little"), int.from_bytes(info[100:104], "little")
    # A retransmitted SYN gives no RTT sample (and took a second or more): then the wall time counts.
    return rtt / 1e6 if rtt and not retransmitted else None


async def _read_answer(reader: asyncio.StreamReader, answer: Answer, max_bytes: int) -> None:
    while True:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if not exc.partial:
                raise Failure("the server closed the connection without answering") from None
            raise Failure("connection broken while reading the answer") from None
        except asyncio.LimitOverrunError:
            raise Failure(f"answer headers larger than {HEAD_LIMIT // 1024} KB") from None
        status, headers = _parse_head(head)
        if status >= 200 or status == 101:
            break  # 1xx interim answers come before the real one
    answer.status, answer.headers = status, headers
    answer.body, answer.truncated = b"", False
    if status in _NO_BODY or status in REDIRECTS and "location" in headers:
        return  # a redirect's body is never read
    decoder = _decoder(headers.get("content-encoding", ""))
    parts, size = [], 0
    async for raw in _body_chunks(reader, headers):
        data = decoder(raw, max_bytes + 1 - size) if decoder else raw
        while data:
            if size + len(data) > max_bytes:  # one byte past the bound: there is more
                parts.append(data[:max_bytes - size])
                answer.body, answer.truncated = b"".join(parts), True
                return
            parts.append(data)
            size += len(data)
            data = decoder(b"", max_bytes + 1 - size) if decoder else b""
    answer.body = b"".join(parts)


def _parse_head(head: bytes):
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit() or len(parts[1]) != 3:
        raise Failure("connection broken while reading the answer")
    headers = Headers()
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise Failure("connection broken while reading the answer")
        headers.add(name, value.strip())
    return int(parts[1]), headers


async def _body_chunks(reader, headers):
    if "chunked" in headers.get("transfer-encoding", "").lower():
        while True:
            line = await reader.readuntil(b"\r\n")
            size_text = line.split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise Failure("connection broken while reading the answer") from None
            if size < 0:
                raise Failure("connection broken while reading the answer")
            if size == 0:
                return  # trailers are not read: the connection is closed after each answer
            while size:
                data = await reader.read(min(size, _CHUNK))
                if not data:
                    raise EOFError
                size -= len(data)
                yield data
            await reader.readexactly(2)
    length = headers.get("content-length")
    if length is not None:
        try:
            left = int(length.split(",")[0])
        except ValueError:
            raise Failure("connection broken while reading the answer") from None
        while left > 0:
            data = await reader.read(min(left, _CHUNK))
            if not data:
                raise EOFError
            left -= len(data)
            yield data
        return
    while data := await reader.read(_CHUNK):  # no length: the body ends with the connection
        yield data


def _decoder(encoding: str):
    """A function (data, at_most) -> decoded bytes for a gzip or deflate body, else None."""
    encoding = encoding.strip().lower()
    if encoding in ("gzip", "x-gzip"):
        state = [zlib.decompressobj(16 + zlib.MAX_WBITS)]
    elif encoding == "deflate":
        state = [zlib.decompressobj()]
    else:
        return None  # identity, or an encoding we did not ask for: passed on as sent
    first = [True]

    def decode(data: bytes, at_most: int) -> bytes:
        obj = state[0]
        data = obj.unconsumed_tail + data
        try:
            out = obj.decompress(data, max(at_most, 1))
        except zlib.error:
            if encoding == "deflate" and first[0]:  # raw deflate, as some servers send
                state[0] = obj = zlib.decompressobj(-zlib.MAX_WBITS)
                out = obj.decompress(data, max(at_most, 1))
            else:
                raise Failure("could not decode the body (bad Content-Encoding)") from None
        first[0] = False
        return out

    return decode


class Headers(Mapping):
    """Case-insensitive answer headers; repeated ones joined by ", " (as requests showed them)."""

    def __init__(self):
        self._by_key: dict = {}

    def add(self, name: str, value: str) -> None:
        key = name.lower()
        if key in self._by_key:
            value = f"{self._by_key[key][1]}, {value}"
            name = self._by_key[key][0]
        self._by_key[key] = (name, value)

    def __getitem__(self, name):
        return self._by_key[name.lower()][1]

    def __contains__(self, name):
        return isinstance(name, str) and name.lower() in self._by_key

    def __iter__(self):
        return (name for name, _ in self._by_key.values())

    def __len__(self):
        return len(self._by_key)

    def __repr__(self):
        return f"Headers({dict(self.items())!r})"
