"""Running checks: all at once, each within its timeout, the run within its deadline.

Every check runs in its own daemon thread, except one that can start without one:
its `start()` hands back (a Future, a function turning that Future into the Result),
and the Result is made in the caller's thread when the Future is done. Thousands of
HTTP probes on one event loop (`monitor/http_loop.py`) need no thread each: 2 000
threads waking at once cost seconds of CPU contending for the GIL, and every
latency they timed included that queue. A check that raises becomes `unknown`
with the reason; one that outlives its timeout is reported with `on_timeout`
(unknown, or critical where no answer means down) and is abandoned: a thread stuck
in a system call (a dead NFS mount) cannot be killed, so the caller ends the process
with `os._exit` once the results are out (`cli.entry`), whatever threads are still
running.
"""

import threading
import time
from functools import partial
from typing import Callable, NamedTuple

from monitor.results import UNKNOWN, Result, with_identity
from monitor.units import format_duration


class Check(NamedTuple):
    """A named measurement: `probe()` returns a Result; ids are `kind` or `kind:name`."""

    id: str
    kind: str
    probe: Callable[[], Result]
    timeout: float = 5.0
    on_timeout: str = UNKNOWN
    # Optional: () -> (Future, finish(Future) -> Result), or None to run `probe` in a thread.
    start: Callable | None = None
    # True: runs once every other check has its result (reads what their connections saw).
    after: bool = False


class Run(NamedTuple):
    """The checks' results, in the order the checks were given."""

    results: list


def run_checks(checks: list[Check], clock=time.monotonic) -> Run:
    """Run `checks` concurrently; return their results in the given order.

    Checks marked `after` run, concurrently too, once all the others have a result.
    """
    if any(c.after for c in checks):
        first = run_checks([c for c in checks if not c.after], clock).results
        then = run_checks([c._replace(after=False) for c in checks if c.after], clock).results
        by_id = {r.id: r for r in first + then}
        return Run([by_id[c.id] for c in checks])
    done: dict[str, Result] = {}
    finished = threading.Condition()
    # Threads wait at the gate until all are started: Thread.start() waits for the new
    # thread to run, and with probes already busy that costs a GIL switch (up to 5 ms)
    # per thread, 250 ms for 50 scrapers.
    gate = threading.Event()

    def work(check: Check):
        gate.wait()
        started = clock()
        try:
            result = check.probe()
        except Exception as exc:  # noqa: BLE001 - any failure is this check's alone
            result = Result(UNKNOWN, f"check failed: {type(exc).__name__}: {exc}")
        elapsed = (clock() - started) * 1000
        with finished:
            if check.id not in done:
                done[check.id] = with_identity(result, check.id, check.kind, elapsed)
            finished.notify()

    ready: list = []  # (check, finish, future) of started checks whose future is done

    def started_done(check, finish, future):
        with finished:
            ready.append((check, finish, future))
            finished.notify()

    threaded = []
    for check in checks:
        begun = None
        if check.start is not None:
            try:
                begun = check.start()
            except Exception:  # noqa: BLE001 - it runs in a thread instead, and fails there if it must
                begun = None
        if begun is None:
            threaded.append(check)
        else:
            future, finish = begun
            future.add_done_callback(partial(started_done, check, finish))
    for check in threaded:
        threading.Thread(target=work, args=(check,), name=f"check:{check.id}", daemon=True).start()
    started = clock()
    gate.set()

    # Each finished check notifies; the loop only scans for timeouts when one is due, so
    # 2 000 checks cost 2 000 wake-ups, not 2 000 scans of 2 000 (which held the GIL
    # while the probes' loop needed it to time their answers).
    by_timeout, total = sorted(checks, key=lambda c: c.timeout), len({c.id for c in checks})
    next_due = 0
    with finished:
        while len(done) < total:
            if ready:
                batch = ready[:]
                ready.clear()
                finished.release()  # the loop's callbacks must not wait while these are judged
                try:
                    made = [(check, _finished(finish, future), (clock() - started) * 1000)
                            for check, finish, future in batch]
                finally:
                    finished.acquire()
                for check, result, elapsed in made:
                    if check.id not in done:
                        done[check.id] = with_identity(result, check.id, check.kind, elapsed)
            now = clock()
            while next_due < len(by_timeout) and now - started >= by_timeout[next_due].timeout:
                check = by_timeout[next_due]
                next_due += 1
                if check.id not in done:
                    message = f"no answer within {format_duration(check.timeout)} (timed out)"
                    done[check.id] = with_identity(Result(check.on_timeout, message), check.id,
                                                   check.kind, (now - started) * 1000)
            if len(done) >= total or next_due >= len(by_timeout) or ready:
                continue
            finished.wait(by_timeout[next_due].timeout - (now - started))

    return Run([done[c.id] for c in checks])



def _finished(finish, future) -> Result:
    try:
        return finish(future)
    except Exception as exc:  # noqa: BLE001 - as in a thread: this check's alone
        return Result(UNKNOWN, f"check failed: {type(exc).__name__}: {exc}")
