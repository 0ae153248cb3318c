"""Running checks: concurrently, each within its timeout, never taking the run down."""

import threading
import time

import pytest

from monitor.results import Result
from monitor.runner import Check, run_checks


@pytest.fixture
def release():
    """An event that stuck checks wait on; set at the end so their threads finish."""
    event = threading.Event()
    yield event
    event.set()


def ok(message="fine"):
    return lambda: Result("ok", message)


def sleeping(seconds, status="ok"):
    def probe():
        time.sleep(seconds)
        return Result(status, f"slept {seconds}s")
    return probe


def test_checks_run_concurrently():
    # Each check waits until all three are running: run one after another, the first
    # would give up at the barrier and be unknown. No clock involved.
    barrier = threading.Barrier(3, timeout=10)

    def meet():
        barrier.wait()
        return Result("ok", "met the others")

    run = run_checks([Check(f"c{i}", "system", meet, timeout=60) for i in range(3)])
    assert [r.status for r in run.results] == ["ok"] * 3, [r.message for r in run.results]


def test_results_keep_the_given_order():
    checks = [Check("slow", "system", sleeping(0.2)), Check("fast", "system", ok()),
              Check("medium", "vault", sleeping(0.1))]
    assert [r.id for r in run_checks(checks).results] == ["slow", "fast", "medium"]


def test_results_carry_their_id_kind_and_duration():
    clock = [100.0]  # an injected clock the probe moves by 50 ms

    def probe():
        clock[0] += 0.05
        return Result("ok", "took 50 ms")

    [result] = run_checks([Check("scraper:uniswap", "scraper", probe)], clock=lambda: clock[0]).results
    assert (result.id, result.kind) == ("scraper:uniswap", "scraper")
    assert result.duration_ms == pytest.approx(50)


def test_a_check_that_raises_is_unknown_with_the_reason_and_the_others_still_report():
    def broken():
        raise RuntimeError("psutil went away")

    run = run_checks([Check("cpu", "system", ok()), Check("memory", "system", broken),
                      Check("load", "system", ok())])
    assert [r.status for r in run.results] == ["ok", "unknown", "ok"]
    assert "RuntimeError" in run.results[1].message and "psutil went away" in run.results[1].message


def test_a_check_that_hangs_is_unknown_once_its_timeout_passes(release):
    checks = [Check("hung", "system", lambda: release.wait() and Result("ok", "late"), timeout=0.3),
              Check("quick", "system", ok())]
    started = time.monotonic()
    run = run_checks(checks)
    elapsed = time.monotonic() - started
    assert 0.3 <= elapsed < 5  # generous for a busy machine: the hung check never returns by itself
    hung, quick = run.results
    assert hung.status == "unknown" and "timed out" in hung.message and "300ms" in hung.message
    assert quick.status == "ok"
    # Abandoned, not joined: its thread is still waiting when the run is over.
    assert any(t.name == "check:hung" and t.is_alive() for t in threading.enumerate())


def test_a_hanging_check_reports_its_on_timeout_status(release):
    check = Check("disk:/mnt/nfs", "system", lambda: release.wait(), timeout=0.2, on_timeout="critical")
    started = time.monotonic()
    [result] = run_checks([check]).results
    assert time.monotonic() - started < 5  # generous for a busy machine: the check never returns by itself
    assert result.status == "critical"


def test_each_check_has_its_own_timeout(release):
    checks = [Check("short", "system", lambda: release.wait(), timeout=0.1),
              Check("long", "system", sleeping(0.3), timeout=2)]
    run = run_checks(checks)
    assert [r.status for r in run.results] == ["unknown", "ok"]


def test_no_checks_is_an_empty_run():
    run = run_checks([])
    assert run.results == []
