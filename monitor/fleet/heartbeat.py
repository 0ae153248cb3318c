"""Heartbeat pings for a watcher outside the host (the healthchecks.io protocol).

Only a watcher elsewhere notices that the monitor itself stopped (cron removed, host
dead, disk full). With `[heartbeat] health = URL` a run GETs `URL/start` when it begins
and POSTs `URL/<exit code>` when it ends, with the run's one-line summary as body
(clipped to 10 KB). Healthchecks (hosted or self-hosted), Uptime Kuma push monitors
and Cronitor speak it.

A ping never changes the exit code and never delays the run by more than its own
deadline (5 s in total per ping, however slowly the peer trickles): `/start` goes out
in a thread while the checks run and is joined before the end ping; a failure is a
WARNING record (`event: heartbeat_failed`) with the URL masked. The requests go over
monitor/rawhttp.py, imported by the /start thread, not by every run (a thread busy
importing holds the GIL the checks need); an https URL's TLS context serves both pings.
"""

import logging
import threading
import time

from monitor.redact import mask_url, register_url, scrub
from monitor.results import OK, SEVERITY

DEADLINE = 5.0  # seconds, in total, per ping
BODY_LIMIT = 10_000  # bytes of summary sent with the end ping
_tls: list | None = None  # where the TLS context is kept; None: the process's one (monitor/rawhttp.py)

log = logging.getLogger("monitor")


def ping_url(url: str, suffix: str) -> str:
    """Given a check URL and "start" or an exit code, return the URL to ping (a query
    string, e.g. healthchecks.io's `?rid=`, stays at the end)."""
    base, sep, query = url.partition("?")
    return f"{base.rstrip('/')}/{suffix}{sep}{query}"


def clip(text: str, limit: int = BODY_LIMIT) -> bytes:
    """One line of UTF-8, at most `limit` bytes, never cut inside a character."""
    line = " ".join(str(text).split())
    data = line.encode("utf-8", "replace")
    if len(data) <= limit:
        return data
    return data[:limit - 3].decode("utf-8", "ignore").encode("utf-8") + b"..."


def split_url(url: str) -> tuple[str, str, int, str, str]:
    """monitor/rawhttp.py's, imported when a ping goes out, not with this module on every run."""
    from monitor import rawhttp
    return rawhttp.split_url(url)


def send(method: str, url: str, body: bytes = b"", timeout: float = DEADLINE,
         clock=time.monotonic, addresses: dict | None = None) -> int:
    """Send one request; return the answer's HTTP status, all within `timeout` but the name
    lookup, whose answers `addresses` keeps for the next ping. Raises OSError or ValueError."""
    from monitor import rawhttp
    kind = {"Content-Type": "text/plain; charset=utf-8"} if method == "POST" else {}
    return rawhttp.request(method, url, body, {"User-Agent": "monitor-heartbeat", **kind}, timeout, clock=clock,
                           status_only=True, addresses=addresses, resolve=_resolve, tls=_tls).status


def _resolve(host: str, port: int) -> list:
    from monitor import rawhttp
    return rawhttp.resolve(host, port)


def _describe(exc: Exception) -> str:
    from monitor import rawhttp

    return scrub(rawhttp.describe(exc))[:200]


class Ping:
    """One ping, sent in a daemon thread (`wait()` joins it within its deadline), or, with
    `inline`, right away in the caller's thread: only for a host whose addresses are in
    `addresses` already, so that every step of it has a timeout."""

    def __init__(self, method: str, url: str, body: bytes = b"", timeout: float = DEADLINE,
                 clock=time.monotonic, addresses: dict | None = None, inline: bool = False):
        self.url, self.timeout, self.clock, self.addresses = url, timeout, clock, addresses
        self.end = clock() + timeout
        self.error: str | None = None
        self._thread = None
        if inline:
            self._run(method, body)
        else:
            self._thread = threading.Thread(target=self._run, args=(method, body), name="heartbeat", daemon=True)
            self._thread.start()

    def _run(self, method: str, body: bytes) -> None:
        try:
            status = send(method, self.url, body, self.timeout, self.clock, self.addresses)
            if not 200 <= status < 300:
                self.error = f"HTTP {status}"
        except TimeoutError:  # the deadline, whether a socket timeout or `left()` saw it pass
            self.error = f"no answer within {self.timeout:g}s"
        except Exception as exc:  # noqa: BLE001 - a ping must never take the run down
            self.error = _describe(exc)

    def wait(self) -> str | None:
        """Wait for the answer until the deadline; return why the ping failed, or None."""
        if self._thread is None:
            return self.error
        self._thread.join(max(0.0, self.end - self.clock()))
        if self._thread.is_alive():  # stuck where no socket timeout reaches (DNS): left behind
            return f"no answer within {self.timeout:g}s"
        return self.error


class Heartbeat:
    """The pings of one run: `begin` sends /start, `end(code, summary)` the verdict."""

    def __init__(self, command: str, url: str, clock=time.monotonic):
        register_url(url)  # the URL is the credential: whatever prints it prints ***
        self.command, self.url, self.clock = command, url, clock
        self.ended = False
        self.addresses: dict = {}  # (host, port): what /start's name lookup found
        self.start = Ping("GET", ping_url(url, "start"), clock=clock, addresses=self.addresses)

    def _failed(self, what: str, error: str | None) -> None:
        if error:
            log.warning("heartbeat %s: %s ping to %s failed: %s", self.command, what, mask_url(self.url), error,
                        extra={"event": "heartbeat_failed", "command": self.command, "ping": what})

    def end(self, exit_code: int, summary: str) -> None:
        """Join /start, then POST URL/<exit_code> with the summary; log what failed."""
        if self.ended:
            return
        self.ended = True

        self._failed("start", self.start.wait())
        code = min(max(int(exit_code), 0), 255)
        # With /start's addresses at hand nothing in the end ping can block past its
        # deadline, so it goes out from here: no thread to start and join after stdout.
        # Without them (the lookup failed or hung) a thread keeps DNS within the deadline.
        ping = Ping("POST", ping_url(self.url, str(code)), clip(scrub(summary)), clock=self.clock,
                    addresses=self.addresses, inline=bool(self.addresses))
        self._failed(str(code), ping.wait())


def begin(config: dict, command: str, dry_run: bool = False) -> Heartbeat | None:
    """Start the heartbeat of `command` if `[heartbeat]` names a URL for it (not under --dry-run)."""
    url = (config.get("heartbeat") or {}).get(command)
    if not url or dry_run:
        return None
    return Heartbeat(command, url)


def summary(command: str, status: str, results, problems: dict | None = None) -> str:
    """The run in one line: "health warning: 2 of 9 checks not ok: disk:/ warning 91.2%: ..."."""
    bad = sorted((r for r in results if r.status != OK), key=lambda r: -SEVERITY.get(r.status, 0))
    if bad:
        parts = []
        for r in bad:
            value = ""
            if r.value is not None:
                number = f"{r.value:g}" if isinstance(r.value, float) else str(r.value)
                value = f" {number}{r.unit}" if r.unit == "%" else f" {number} {r.unit or ''}".rstrip()
            parts.append(f"{r.id} {r.status}{value}: {r.message}")
        text = f"{command} {status}: {len(bad)} of {len(results)} checks not ok: " + "; ".join(parts)
    else:
        text = f"{command} {status}: all {len(results)} checks ok"
    for key, message in (problems or {}).items():
        text += f"; {key}: {message}"
    return text
