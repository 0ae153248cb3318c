"""Scraper checks (kind `scraper`): is a scraper alive? HTTP health, process, heartbeat.

`scraper` runs every probe its config names (`url`, `process`, `heartbeat_file`);
each probe measures and judges itself into a `Probe`, and the worst one decides
the Result. Network, the process table and the clock come in as arguments.
"""

import json
import os
import re
import stat
import threading
import time
from typing import NamedTuple

from monitor.results import CRITICAL, OK, SEVERITY, UNKNOWN, WARNING, Result, Threshold, worst
from monitor.units import format_duration

# The config fills these in; they serve callers that build an entry by hand.
DEFAULT_LATENCY_MS = Threshold(1000, 3000)
DEFAULT_TIMEOUT = 5.0
DEFAULT_MAX_AGE = 900.0
MAX_SHOWN = 60            # characters of an unexpected JSON value quoted in a message
FUTURE_SLACK_SECONDS = 60  # a heartbeat this far in the future means a wrong clock


class _ProcessTable:
    """Command lines of all processes, one scan shared by the scrapers that ask together.

    Scans run one at a time: psutil hands out shared Process objects and sets `.info`
    on them. A caller waiting for the lock takes the result of a scan that started
    after it asked, exactly what its own scan would have seen, so twenty scrapers
    checked at once cost about two scans instead of twenty in a row.
    """

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self._lock = threading.Lock()
        self._last: tuple | None = None  # (process_iter, started, [(pid, cmdline)])

    def snapshot(self, process_iter) -> list[tuple[int, list | None]]:
        asked = self.clock()
        with self._lock:
            if self._last and self._last[0] is process_iter and self._last[1] >= asked:
                return self._last[2]
            started = self.clock()
            rows = [(proc.pid, (getattr(proc, "info", None) or {}).get("cmdline"))
                    for proc in process_iter(["cmdline"])]
            self._last = (process_iter, started, rows)
            return rows


_PROCESS_TABLE = _ProcessTable()


class Probe(NamedTuple):
    """One probe's verdict: a status, the line a person reads, and what was measured."""

    status: str
    message: str
    details: dict


def scraper(cfg: dict, session=None, process_iter=None, now=time.time) -> Result:
    """Given a `[[scrapers]]` entry, run each configured probe and return the worst verdict.

    The value is the HTTP latency in ms when there is a `url` probe that got an answer.
    """
    # The quick local probes go first: the HTTP probe may use all of the timeout.
    local: dict[str, Probe] = {}
    if cfg.get("process"):
        local["process"] = process_probe(cfg["process"], process_iter)
    if cfg.get("heartbeat_file"):
        local["heartbeat"] = heartbeat_probe(cfg["heartbeat_file"],
                                             cfg.get("heartbeat_max_age") or DEFAULT_MAX_AGE, now)
    probes: dict[str, Probe] = {}
    latency_ms, threshold = None, None
    if cfg.get("url"):
        threshold = cfg.get("latency_ms") or DEFAULT_LATENCY_MS
        probes["http"], latency_ms = http_probe(cfg["url"], threshold, cfg.get("expect_json") or {},
                                                cfg.get("timeout") or DEFAULT_TIMEOUT, session)
    probes.update(local)
    if not probes:  # the config refuses this; a hand-made entry might not
        return Result(UNKNOWN, "no probe configured (url, process or heartbeat_file)")

    status = worst(*(p.status for p in probes.values()))
    failed = sorted((p for p in probes.values() if p.status != OK),
                    key=lambda p: -SEVERITY[p.status])  # critical lines first
    message = "; ".join(p.message for p in (failed or probes.values()))
    details = {name: {"status": p.status, "message": p.message, **p.details}
               for name, p in probes.items()}
    return Result(status, message, value=latency_ms, unit="ms" if threshold else None,
                  warning=threshold.warning if threshold else None,
                  critical=threshold.critical if threshold else None, details=details)


# --- HTTP ---------------------------------------------------------------------------

def http_probe(url: str, threshold: Threshold, expect_json: dict, timeout: float,
               session=None) -> tuple[Probe, float | None]:
    """GET `url`: a 2xx within the latency threshold, with the expected JSON fields.

    Return the Probe and the latency in ms (None when there was no answer).
    """
    from monitor import http  # requests is loaded only when a scraper has a URL

    try:
        resp = http.get(session, url, timeout)
    except http.ProbeError as exc:
        return Probe(CRITICAL, f"HTTP: {exc.reason}", {"error": exc.reason}), None
    ms = round(resp.elapsed * 1000, 1)
    details = {"status_code": resp.status, "latency_ms": ms, "redirects": resp.redirects,
               "body_bytes": len(resp.body), "truncated": resp.truncated}
    line = f"HTTP {resp.status} in {ms:.0f} ms"
    if not 200 <= resp.status < 300:
        return Probe(CRITICAL, line, details), ms

    status = threshold.judge(ms)
    if status != OK:
        level = threshold.critical if status == CRITICAL else threshold.warning
        line += f" (slower than {level:g} ms)"
    if expect_json:
        problems = json_mismatches(resp, expect_json)
        if problems:
            status = CRITICAL
            details["json"] = problems
            line += "; " + problems[0] + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else "")
    return Probe(status, line, details), ms


def json_mismatches(resp, expect_json: dict) -> list[str]:
    """Return one line per expected field that the body does not have (empty: all match)."""
    from monitor.http import json_field

    wanted = ", ".join(f"{path} = {_show(value)}" for path, value in expect_json.items())
    if resp.truncated:
        return [f"body is over {len(resp.body):,} bytes, not parsed (expected {wanted})"]
    try:
        body = resp.json()
    except ValueError:
        return [f"body is not JSON (expected {wanted})"]
    problems = []
    for path, expected in expect_json.items():
        try:
            actual = json_field(body, path)
        except KeyError:
            problems.append(f"{path} is missing, expected {_show(expected)}")
            continue
        if not _same(actual, expected):
            problems.append(f"{path} is {_show(actual)}, expected {_show(expected)}")
    return problems


def _same(actual, expected) -> bool:
    # In Python True == 1: a TOML `true` must not accept a JSON 1, nor 1 accept true.
    if isinstance(actual, bool) or isinstance(expected, bool):
        return type(actual) is type(expected) and actual == expected
    return actual == expected


def _show(value) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= MAX_SHOWN else text[:MAX_SHOWN - 1] + "…"


# --- process -------------------------------------------------------------------------

def process_probe(pattern: str, process_iter=None) -> Probe:
    """At least one process whose command line matches `pattern` (re.search) is running.

    The monitor itself and its parent are left out: their command lines can hold the
    pattern (`monitor health` run from a shell script that names the scraper).
    """
    if process_iter is None:
        import psutil  # only scrapers with a process probe pay for psutil

        process_iter = psutil.process_iter
    regex = re.compile(pattern)
    own = {os.getpid(), os.getppid()}
    # No command line: kernel threads, zombies, processes we may not read.
    pids = [pid for pid, cmdline in _PROCESS_TABLE.snapshot(process_iter)
            if cmdline and pid not in own and regex.search(" ".join(cmdline))]
    details = {"pattern": pattern, "count": len(pids), "pids": pids[:10]}
    if not pids:
        return Probe(CRITICAL, f"no process matches {_show(pattern)}", details)
    verb = "process matches" if len(pids) == 1 else "processes match"
    return Probe(OK, f"{len(pids)} {verb} {_show(pattern)}", details)


# --- heartbeat -----------------------------------------------------------------------

def heartbeat_probe(path: str, max_age: float, now=time.time) -> Probe:
    """The file the scraper touches on success was modified within `max_age` seconds."""
    limit = getattr(max_age, "text", None) or format_duration(max_age)
    details = {"path": path, "max_age_seconds": float(max_age)}
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return Probe(CRITICAL, f"heartbeat file {path} is missing", details)
    except OSError as exc:
        return Probe(CRITICAL, f"heartbeat file {path}: {exc.strerror or type(exc).__name__}", details)
    if stat.S_ISDIR(st.st_mode):
        return Probe(CRITICAL, f"heartbeat file {path} is a directory", details)
    age = now() - st.st_mtime
    details["age_seconds"] = round(age, 1)
    if age < -FUTURE_SLACK_SECONDS:
        # A future mtime would look fresh for as long as the clocks disagree.
        return Probe(WARNING, f"heartbeat {path} is {format_duration(-age)} in the future (clock skew?)",
                     details)
    if age > max_age:
        return Probe(CRITICAL, f"heartbeat {format_duration(age)} old (max {limit}): {path}", details)
    return Probe(OK, f"heartbeat {format_duration(max(age, 0))} ago", details)
