"""The state folder: atomic writes, corrupt files set aside, one run of a command at a time."""

import json
import logging
import os
import re
import subprocess
import threading
import time

import pytest

from monitor import state
from monitor.state import LockHeld, RunLock, StateError
from tests.conftest import MONITOR, VERDICT_CONFIGS, clean_env

EXIT_CODES = {"ok": 0, "warning": 1, "critical": 2, "unknown": 3}


# --- atomic writes ----------------------------------------------------------------------------

def test_a_write_replaces_the_file_and_leaves_no_temp_file(tmp_path):
    path = str(tmp_path / "counters.json")
    state.write_json(path, {"a": 1})
    state.write_json(path, {"a": 2, "b": [1, 2]})
    assert os.listdir(tmp_path) == ["counters.json"]
    assert state.read_json(path) == {"a": 2, "b": [1, 2]}


def test_a_write_that_fails_keeps_the_old_file_and_leaves_no_temp_file(tmp_path, monkeypatch):
    path = str(tmp_path / "counters.json")
    state.write_json(path, {"old": True})

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError):
        state.write_json(path, {"new": True})
    assert os.listdir(tmp_path) == ["counters.json"]
    assert state.read_json(path) == {"old": True}


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o077])
def test_state_files_are_private_whatever_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        state.atomic_write(str(tmp_path / "alerts.json"), b"{}")
    finally:
        os.umask(old)
    assert (tmp_path / "alerts.json").stat().st_mode & 0o777 == 0o600


# --- corrupt files ----------------------------------------------------------------------------

def test_a_missing_state_file_reads_as_the_default(tmp_path):
    assert state.read_json(str(tmp_path / "counters.json"), default={}) == {}
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("content", [b"\x00garbage{", b"", b"  \n", b"[1, 2]", b'{"cpu": ', b"\xff\xfe"])
def test_a_corrupt_state_file_is_set_aside_with_a_warning(tmp_path, monitor_records, content):
    path = tmp_path / "counters.json"
    path.write_bytes(content)
    assert state.read_json(str(path), default={}) == {}
    [aside] = os.listdir(tmp_path)
    assert re.fullmatch(r"counters\.json\.corrupt-\d{8}T\d{6}", aside)
    assert (tmp_path / aside).read_bytes() == content
    [warning] = [r for r in monitor_records if r.levelno == logging.WARNING]
    assert str(path) in warning.getMessage() and aside in warning.getMessage()


def test_a_state_path_that_is_a_folder_is_a_state_error(tmp_path):
    (tmp_path / "counters.json").mkdir()
    with pytest.raises(StateError, match="is a directory"):
        state.read_json(str(tmp_path / "counters.json"))


def test_a_run_with_a_corrupt_state_file_goes_on_from_empty_state(tmp_path, run_monitor, envelope, log_records):
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "counters.json").write_text("{ not json")
    proc = run_monitor(["health"], tmp_path, config=VERDICT_CONFIGS["warning"], steady_cpu=False)
    data = envelope(proc)
    assert data["checks"]["disk:/"]["status"] == "warning"
    assert proc.returncode == EXIT_CODES[data["overall_status"]]  # the checks alone decide
    assert "state_write_error" not in data and proc.stderr == ""
    names = os.listdir(tmp_path / "state")
    assert any(re.fullmatch(r"counters\.json\.corrupt-\d{8}T\d{6}", n) for n in names)
    assert isinstance(json.loads((tmp_path / "state" / "counters.json").read_text()), dict)
    warnings = [r for r in log_records(tmp_path / "logs" / "health.log")
                if r["levelname"] == "WARNING" and "counters.json" in r["message"]]
    assert len(warnings) == 1


# --- the run lock -----------------------------------------------------------------------------

@pytest.fixture
def held_lock(tmp_path):
    """Hold the health lock of tmp_path/state as another run would, with PID 4242 written in it."""
    folder = tmp_path / "state"
    folder.mkdir()
    lock = RunLock(str(folder), "health", wait=0)
    lock.acquire()
    (folder / "health.lock").write_text("4242\n")
    yield lock
    lock.release()


def test_a_second_run_while_the_lock_is_held_exits_3_naming_the_pid(tmp_path, held_lock, run_monitor):
    started = time.monotonic()
    proc = run_monitor(["health"], tmp_path, env={"MONITOR_LOCK_WAIT": "0.5"}, steady_cpu=False)
    elapsed = time.monotonic() - started
    assert proc.returncode == 3
    assert proc.stdout == ""
    [line] = proc.stderr.splitlines()
    assert "4242" in line and "health.lock" in line
    assert 0.5 <= elapsed < 20  # it waited MONITOR_LOCK_WAIT, not the default 30 s (generous: busy CI)
    assert not (tmp_path / "logs").exists()  # nothing written by the run that gave up


def test_a_run_waits_for_the_lock_to_be_released(tmp_path, held_lock, write_config, verdict_config):
    write_config(tmp_path, verdict_config("ok"), "ok.toml")
    proc = subprocess.Popen([MONITOR, "health", "-q", "--config", "ok.toml"], cwd=tmp_path,
                            env=clean_env({"MONITOR_LOCK_WAIT": "10"}), stderr=subprocess.PIPE, text=True)
    time.sleep(0.4)
    assert proc.poll() is None  # still waiting
    held_lock.release()
    _, err = proc.communicate(timeout=10)
    assert proc.returncode != 3, err
    assert (tmp_path / "state" / "health.lock").read_text().strip() == str(proc.pid)


def test_the_lock_is_exclusive_and_released(tmp_path):
    first = RunLock(str(tmp_path), "health", wait=0.05)
    first.acquire()
    with pytest.raises(LockHeld, match=f"PID {os.getpid()}"):
        RunLock(str(tmp_path), "health", wait=0.05).acquire()
    RunLock(str(tmp_path), "backup-check", wait=0.05).acquire()  # another command: its own lock
    first.release()
    again = RunLock(str(tmp_path), "health", wait=0.05)
    again.acquire()
    again.release()



def _acquire_in_thread(lock):
    outcome = []
    thread = threading.Thread(target=lambda: outcome.append(lock.acquire() or "acquired"), daemon=True)
    thread.start()
    return thread, outcome


def _wake_lock_holder(folder) -> int:
    """The lock type another description would meet on byte 0 of health.lock (F_UNLCK: free)."""
    import fcntl

    fd = os.open(os.path.join(folder, "health.lock"), os.O_RDWR)
    try:
        found = fcntl.fcntl(fd, fcntl.F_OFD_GETLK, state._flock(fcntl.F_WRLCK, 0))
        return state.struct.unpack(state._FLOCK, found)[0]
    finally:
        os.close(fd)


def _in_a_fresh_process(scenario, *args):
    """What `scenario(*args)` returns, run in a new interpreter.

    A lock on an open file description lasts as long as any copy of it: a child forked
    meanwhile by a thread another test left running in this worker (a timed-out check's
    regex child, a subprocess before its exec) would keep a released wake lock held for
    its whole life. A monitor run is its own process; so is this.
    """
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(scenario, args)


def _sleeping_waiter(folder):
    import fcntl

    sleeps = []
    state.time.sleep = lambda seconds: sleeps.append(seconds)  # a fresh process: nothing to restore
    holder = RunLock(folder, "health", wait=0)
    holder.acquire()
    seen = {"holder's wake lock": _wake_lock_holder(folder) == fcntl.F_WRLCK}
    waiter = RunLock(folder, "health", wait=60)
    thread, outcome = _acquire_in_thread(waiter)
    thread.join(0.3)
    seen["waiting"] = outcome == []  # it cannot get the lock while the holder has it
    holder.release()
    thread.join(60)  # generous: a busy CI machine; the waiter is woken by the kernel, not a timer
    seen["outcome"], seen["sleeps"] = outcome, sleeps
    seen["new holder's wake lock"] = _wake_lock_holder(folder) == fcntl.F_WRLCK  # it wakes the next in turn
    with open(os.path.join(folder, "health.lock")) as pid_file:
        seen["pid file"] = pid_file.read() == f"{os.getpid()}\n"
    waiter.release()
    seen["free at the end"] = _wake_lock_holder(folder) == fcntl.F_UNLCK
    return seen


def test_a_waiting_run_sleeps_on_the_holder_and_wakes_when_it_leaves_without_polling(tmp_path):
    assert _in_a_fresh_process(_sleeping_waiter, str(tmp_path)) == {
        "holder's wake lock": True, "waiting": True, "outcome": ["acquired"], "sleeps": [],
        "new holder's wake lock": True, "pid file": True, "free at the end": True}


def _a_waiter_gives_up(folder):
    import fcntl

    holder = RunLock(folder, "health", wait=0)
    holder.acquire()
    try:
        RunLock(folder, "health", wait=0.05).acquire()
        return "the waiter got the lock"
    except LockHeld:
        pass
    holder.release()  # the thread that waited for the quitter gets the wake lock now, and drops it
    for _ in range(2000):  # until that thread is gone (it holds the lock for a moment); 20 s: busy CI
        if not any(thread.name == "run-lock-wait" for thread in threading.enumerate()):
            break
        time.sleep(0.01)
    left_behind = _wake_lock_holder(folder) != fcntl.F_UNLCK
    again = RunLock(folder, "health", wait=0)
    again.acquire()
    taken_again = _wake_lock_holder(folder) == fcntl.F_WRLCK
    again.release()
    return {"left behind": left_behind, "the next run's wake lock": taken_again}


def test_a_waiter_that_gave_up_leaves_no_wake_lock_behind(tmp_path):
    assert _in_a_fresh_process(_a_waiter_gives_up, str(tmp_path)) == {
        "left behind": False, "the next run's wake lock": True}


def test_with_the_pid_file_removed_during_a_run_a_waiter_still_gets_the_lock_when_the_holder_leaves(tmp_path):
    holder = RunLock(str(tmp_path), "health", wait=0)
    holder.acquire()
    os.unlink(tmp_path / "health.lock")  # the wake lock is lost with it; the run lock is not
    waiter = RunLock(str(tmp_path), "health", wait=60)
    thread, outcome = _acquire_in_thread(waiter)
    thread.join(0.3)
    assert outcome == []
    holder.release()
    thread.join(60)
    assert outcome == ["acquired"]
    waiter.release()


def test_a_lock_whose_state_folder_cannot_be_opened_is_a_state_error_not_a_crash(tmp_path):
    (tmp_path / "state").write_text("a file where the folder should be")
    with pytest.raises(StateError, match="state"):
        RunLock(str(tmp_path / "state"), "health", wait=0.05).acquire()


def test_a_folder_in_place_of_the_lock_file_still_locks_and_is_named(tmp_path):
    (tmp_path / "health.lock").mkdir()
    first = RunLock(str(tmp_path), "health", wait=0.05)
    first.acquire()
    assert "health.lock" in first.problem and "is a directory" in first.problem
    with pytest.raises(LockHeld):
        RunLock(str(tmp_path), "health", wait=0.05).acquire()
    first.release()


def test_the_state_folder_is_created_private(tmp_path):
    old = os.umask(0)
    try:
        state.ensure_folder(str(tmp_path / "state"))
    finally:
        os.umask(old)
    assert (tmp_path / "state").stat().st_mode & 0o777 == 0o700


def test_a_state_folder_that_is_a_file_is_a_state_error(tmp_path):
    (tmp_path / "state").write_text("")
    with pytest.raises(StateError):
        state.ensure_folder(str(tmp_path / "state"))


def test_files_of_a_run_are_private_even_under_umask_000(tmp_path, write_config, verdict_config):
    write_config(tmp_path, verdict_config("warning"), "ok.toml")
    proc = subprocess.run(["bash", "-c", f"umask 000 && exec {MONITOR} health -q --config ok.toml"],
                          cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=30)
    assert proc.returncode in (1, 2), proc.stderr
    assert (tmp_path / "state" / "counters.json").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "state" / "health.lock").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "logs" / "health.log").stat().st_mode & 0o777 == 0o640
    for folder, dirs, files in os.walk(tmp_path):
        for name in dirs + files:
            mode = os.stat(os.path.join(folder, name)).st_mode
            assert not mode & 0o002, f"{name} is world-writable"
            if not name.endswith(".toml"):
                assert not mode & 0o004 or name in dirs, f"{name} is world-readable"


# --- planted files ----------------------------------------------------------------------------

def _planted(tmp_path, kind):
    victim = tmp_path / "victim"
    victim.write_text("victim\n")
    path = tmp_path / "counters.json"
    if kind == "symlink":
        path.symlink_to(victim)
    elif kind == "dangling symlink":
        path.symlink_to(tmp_path / "nowhere")
    elif kind == "hard link":
        os.link(victim, path)
    elif kind == "fifo":
        os.mkfifo(path)
    return path, victim


@pytest.mark.parametrize("kind", ["symlink", "dangling symlink", "hard link", "fifo"])
def test_open_regular_refuses_what_is_not_a_regular_file_with_one_link(tmp_path, kind):
    path, victim = _planted(tmp_path, kind)
    for flags in (os.O_RDONLY, os.O_WRONLY | os.O_APPEND | os.O_CREAT, os.O_RDWR | os.O_CREAT):
        with pytest.raises(state.UnsafeFile, match="; refused, nothing read or written through it"):
            state.open_regular(str(path), flags)
    assert victim.read_text() == "victim\n"
    assert not (tmp_path / "nowhere").exists()  # O_CREAT did not create the link's target


@pytest.mark.parametrize("kind", ["symlink", "fifo"])
def test_a_planted_state_file_is_refused_on_read_and_replaced_not_written_through_on_write(tmp_path, kind):
    path, victim = _planted(tmp_path, kind)
    with pytest.raises(OSError, match="not a regular file"):
        state.read_json(str(path), default={})
    state.write_json(str(path), {"a": 1})
    assert victim.read_text() == "victim\n"
    assert not path.is_symlink() and state.read_json(str(path)) == {"a": 1}
    assert sorted(os.listdir(tmp_path)) == ["counters.json", "victim"]  # no temp file left


# --- what a run carries to the next -----------------------------------------------------------

def test_what_a_run_carries_keeps_or_drops_the_entries_it_did_not_touch():
    host = state.Carried({"cpu": 1, "first_run": 5.0})
    assert host.to_write(keep_untouched=True) is None  # nothing saved, nothing dropped: no write
    host.save("cpu", 2)
    assert host.to_write(keep_untouched=True) == {"cpu": 2, "first_run": 5.0}
    cache = state.Carried({"verify:/old.gz": {}, "verify:/new.gz": {"ok": True}})
    assert cache.to_write(keep_untouched=False) == {}  # every file gone: the cache is emptied
    cache.save("verify:/new.gz", {"ok": True})
    assert cache.to_write(keep_untouched=False) == {"verify:/new.gz": {"ok": True}}
    assert state.Carried().to_write(keep_untouched=False) is None
    assert state.Carried(["not", "a", "dict"]).previous == {}


def test_a_baseline_is_refused_after_a_reboot_from_the_future_or_with_a_garbled_field():
    carried = state.Carried({"net": {"boot": 1.0, "time": 50.0, "n": 3}})
    assert carried.baseline("net", 1.0, 60.0, numbers=("n",)) == {"boot": 1.0, "time": 50.0, "n": 3}
    assert carried.baseline("net", 2.0, 60.0) is None  # another boot
    assert carried.baseline("net", 1.0, 40.0) is None  # saved "after" now
    assert state.Carried({"net": {"boot": 1.0, "time": 50.0, "n": "3"}}).baseline("net", 1.0, 60.0, ("n",)) is None


@pytest.mark.parametrize("value, number", [(1, True), (2.5, True), (True, False), (float("nan"), False),
                                           (float("inf"), False), (float("-inf"), False), ("1", False),
                                           (None, False)])
def test_a_carried_number_is_a_finite_int_or_float(value, number):
    assert state.is_number(value) is number


def test_nan_and_infinity_in_a_state_file_read_as_null_and_are_written_back_as_plain_json(tmp_path):
    path = tmp_path / "counters.json"
    path.write_text('{"net": {"boot": 1.0, "time": Infinity, "nics": {"eth0": [NaN, -Infinity]}}, "ok": 2}')
    value = state.read_json(str(path))
    assert value == {"net": {"boot": 1.0, "time": None, "nics": {"eth0": [None, None]}}, "ok": 2}
    state.write_json(str(path), value)
    json.loads(path.read_text(), parse_constant=lambda name: pytest.fail(f"{name} written"))
