"""Host checks fed with fake kernel counters, and the /proc reader checked against psutil."""

import json
import math
import os
import pwd
import shutil
import subprocess
import threading
import time
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest

from monitor.checks import system
from monitor.checks.procfs import CpuTimes, Memory, NicCounters, ProcSource, Swap, normal_mount_point
from monitor.state import Carried as Counters
from monitor.results import Threshold
from monitor.runner import Check, run_checks

BOOT = 1_700_000_000.0
CPU = Threshold(80, 95)
NET_FIELDS = ("bytes_sent", "bytes_recv", "errin", "errout", "dropin", "dropout")


class FakeHost:
    """psutil's API with canned answers; `cpu_times` returns its readings in turn."""

    def __init__(self, cpu=(), nics=None, memory=None, swap=None, boot=BOOT):
        self.cpu_readings = list(cpu)
        self.nics = nics or {}
        self.memory, self.swap, self.boot = memory, swap, boot

    def boot_time(self):
        return self.boot

    def cpu_times(self):
        return self.cpu_readings.pop(0) if len(self.cpu_readings) > 1 else self.cpu_readings[0]

    def net_io_counters(self, pernic=True):
        assert pernic
        return self.nics

    def virtual_memory(self):
        return self.memory

    def swap_memory(self):
        return self.swap


class FakeClock:
    def __init__(self, now=1000.0):
        self.now = now

    def __call__(self):
        return self.now


def cpu_times(total, idle, **extra):
    """Times whose total is `total` and idle `idle` (user makes up the difference)."""
    return CpuTimes(user=total - idle, nice=0.0, system=0.0, idle=idle, **extra)


def cpu_baseline(total, idle, at, boot=BOOT):
    return {"cpu": {"boot": boot, "time": at, "total": total, "idle": idle}}


def nic(sent=0, recv=0, errin=0, errout=0, dropin=0, dropout=0):
    return NicCounters(bytes_sent=sent, bytes_recv=recv, packets_sent=0, packets_recv=0,
                       errin=errin, errout=errout, dropin=dropin, dropout=dropout)


def net_baseline(at, boot=BOOT, **nics):
    return {"net": {"boot": boot, "time": at, "nics": {
        name: [getattr(counters, f) for f in NET_FIELDS] for name, counters in nics.items()}}}


def no_sleep(calls):
    return calls.append


# --- CPU --------------------------------------------------------------------------------------

def no_own_cpu():
    return 0.0


def cpu_check(counters, host, own=no_own_cpu, min_span=10.0, wall=lambda: BOOT + 86400.0):
    return system.cpu(CPU, counters, host, min_span, own_cpu=own, wall=wall)


def test_cpu_is_the_average_since_the_saved_counters():
    counters = Counters(cpu_baseline(1000.0, 500.0, at=940.0), clock=FakeClock(1000.0))
    result = cpu_check(counters, FakeHost(cpu=[cpu_times(1200.0, 600.0)]))
    assert result.value == 50.0
    assert result.status == "ok"
    assert "50.0%" in result.message and "avg over 1m" in result.message
    assert counters.updates["cpu"] == {"boot": BOOT, "samples": [
        {"time": 940.0, "total": 1000.0, "idle": 500.0, "monitor": 0.0},
        {"time": 1000.0, "total": 1200.0, "idle": 600.0, "monitor": 0.0}]}


def test_cpu_is_judged_against_its_thresholds():
    counters = Counters(cpu_baseline(1000.0, 500.0, at=940.0), clock=FakeClock(1000.0))
    result = cpu_check(counters, FakeHost(cpu=[cpu_times(1100.0, 503.0)]))
    assert (result.value, result.status) == (97.0, "critical")
    assert (result.warning, result.critical, result.unit) == (80, 95, "%")


def test_iowait_counts_as_idle_and_guest_time_is_not_counted_twice():
    counters = Counters(cpu_baseline(0.0, 0.0, at=0.0), clock=FakeClock(100.0))
    # 100 s of user time of which 50 s ran a guest (already inside user), 50 s idle, 50 s iowait
    times = CpuTimes(user=100.0, nice=0.0, system=0.0, idle=50.0, iowait=50.0, guest=50.0)
    assert cpu_check(counters, FakeHost(cpu=[times])).value == 50.0


class Machine:
    """A host with `cpus` CPUs, `busy` of them burning, and monitor runs taking a core.

    Kernel counters advance with `advance(seconds, monitor_cpu)`; `run()` is one
    `monitor health`: start-up costs `startup` s of CPU on an idle core before the CPU
    check samples, the rest of the run `tail` s after it.
    """

    def __init__(self, cpus=2, busy=1, startup=0.12, tail=0.01):  # as measured with /usr/bin/time
        self.cpus, self.busy, self.startup, self.tail = cpus, busy, startup, tail
        self.clock, self.total, self.idle = FakeClock(5000.0), 5000.0 * cpus, 5000.0 * (cpus - busy)
        self.saved: dict = {}

    def advance(self, seconds, monitor_cpu=0.0):
        self.clock.now += seconds
        self.total += self.cpus * seconds
        self.idle += (self.cpus - self.busy) * seconds - monitor_cpu

    def run(self, gap=0.0, min_span=10.0):
        self.advance(gap)
        self.advance(self.startup, monitor_cpu=self.startup)  # the interpreter starting: one core
        counters = Counters(self.saved, clock=self.clock)
        result = cpu_check(counters, FakeHost(cpu=[cpu_times(self.total, self.idle)]),
                           own=lambda: self.startup, min_span=min_span)
        self.advance(self.tail, monitor_cpu=self.tail)
        self.saved = {**self.saved, **counters.updates}
        return result


def test_back_to_back_runs_do_not_count_monitor_itself():
    # The case: one core of two busy (true load 50 %), four runs back to back.
    # Counting monitor's own start-up read 92-95 % and paged.
    machine = Machine()
    machine.run(gap=300.0)  # an earlier cron run 5 minutes before
    machine.advance(300.0)
    readings = [machine.run(gap=0.02) for _ in range(4)]
    assert "avg over 5m" in readings[0].message
    assert readings[0].value == 50.0
    for result in readings:
        # Only the earlier runs' short tails (after their samples) remain in the window.
        assert 49.0 <= result.value <= 54.0, result.message
        assert result.status == "ok"


def test_back_to_back_runs_judge_over_the_oldest_sample_when_none_is_old_enough():
    machine = Machine()
    first = machine.run(gap=1.0)  # no sample yet: since boot
    assert "since boot" in first.message
    second, third = machine.run(gap=0.01), machine.run(gap=0.01)
    # The window starts at the first run's sample (the oldest): it holds runs two and three.
    assert "avg over 280ms" in third.message
    assert 49.0 <= second.value <= 54.0 and 49.0 <= third.value <= 54.0, (second.message, third.message)
    assert third.details["monitor_cpu_seconds"] == pytest.approx(0.24)


def test_the_window_starts_at_the_newest_sample_at_least_min_span_old():
    saved = {"cpu": {"boot": BOOT, "samples": [
        {"time": 900.0, "total": 0.0, "idle": 0.0, "monitor": 0.0},           # 100 s old
        {"time": 980.0, "total": 160.0, "idle": 100.0, "monitor": 0.5},       # 20 s old: the baseline
        {"time": 995.0, "total": 190.0, "idle": 110.0, "monitor": 0.7}]}}     # 5 s old: too recent
    counters = Counters(saved, clock=FakeClock(1000.0))
    result = cpu_check(counters, FakeHost(cpu=[cpu_times(200.0, 110.0)]), own=lambda: 0.2)
    # busy 90 - 60 = 30 s of which monitor 0.7 - 0.5 + 0.2 = 0.4 s; window 40 s
    assert result.value == round(100 * 29.6 / 40, 1)
    assert "avg over 20s" in result.message
    assert [s["time"] for s in counters.updates["cpu"]["samples"]] == [980.0, 995.0, 1000.0]
    assert counters.updates["cpu"]["samples"][-1]["monitor"] == 0.9


def test_min_span_is_configurable():
    saved = {"cpu": {"boot": BOOT, "samples": [
        {"time": 900.0, "total": 0.0, "idle": 0.0, "monitor": 0.0},
        {"time": 980.0, "total": 160.0, "idle": 100.0, "monitor": 0.0}]}}
    result = cpu_check(Counters(saved, clock=FakeClock(1000.0)), FakeHost(cpu=[cpu_times(200.0, 100.0)]),
                       min_span=60.0)
    assert "avg over 1m40s" in result.message and result.value == 50.0


def test_the_saved_samples_stay_few():
    counters_file: dict = {}
    clock = FakeClock(1000.0)
    total = 0.0
    for _ in range(20):  # twenty runs a second apart
        clock.now += 1.0
        total += 2.0
        counters = Counters(counters_file, clock=clock)
        cpu_check(counters, FakeHost(cpu=[cpu_times(total, total / 2)]))
        counters_file = {**counters_file, **counters.updates}
    samples = counters_file["cpu"]["samples"]
    assert len(samples) <= system.CPU_MAX_SAMPLES
    assert clock.now - samples[0]["time"] >= 10.0  # the baseline of the next run is kept


def test_the_first_run_averages_since_boot_without_sleeping():
    counters = Counters({}, clock=FakeClock(1000.0))
    host = FakeHost(cpu=[cpu_times(2000.0, 1500.0)])
    result = system.cpu(CPU, counters, host, own_cpu=lambda: 0.5, wall=lambda: BOOT + 1000.0, sleep=pytest.fail)
    assert result.value == round(100 * 499.5 / 2000, 1)  # its own 0.5 s left out
    assert "since boot 16m40s ago" in result.message
    assert counters.updates["cpu"] == {"boot": BOOT, "samples": [
        {"time": 1000.0, "total": 2000.0, "idle": 1500.0, "monitor": 0.5}]}


def test_a_reboot_averages_since_the_new_boot():
    counters = Counters(cpu_baseline(10.0, 5.0, at=900.0, boot=BOOT - 3600), clock=FakeClock(1000.0))
    result = cpu_check(counters, FakeHost(cpu=[cpu_times(1000.0, 500.0)]))
    assert result.value == 50.0 and "since boot" in result.message
    assert counters.updates["cpu"]["boot"] == BOOT
    assert len(counters.updates["cpu"]["samples"]) == 1


def test_counters_going_backwards_average_since_boot():
    counters = Counters(cpu_baseline(50_000.0, 20_000.0, at=900.0), clock=FakeClock(1000.0))
    result = cpu_check(counters, FakeHost(cpu=[cpu_times(1000.0, 900.0)]))
    assert result.value == 10.0 and "since boot" in result.message


def test_idle_stepping_back_a_little_keeps_the_window():
    # The kernel's iowait (idle for us) can go back a tick: still this boot's counters.
    counters = Counters(cpu_baseline(1000.0, 500.0, at=940.0), clock=FakeClock(1000.0))
    result = cpu_check(counters, FakeHost(cpu=[cpu_times(1100.0, 499.99)]))
    assert result.value == 100.0 and "avg over 1m" in result.message


def test_a_sample_from_the_future_is_ignored():
    counters = Counters(cpu_baseline(100.0, 50.0, at=5000.0), clock=FakeClock(1000.0))
    assert "since boot" in cpu_check(counters, FakeHost(cpu=[cpu_times(1000.0, 500.0)])).message


@pytest.mark.parametrize("saved", [
    {"boot": BOOT, "time": "yesterday"},
    {"boot": BOOT, "samples": "many"},
    {"boot": BOOT, "samples": [None, [1, 2], {"time": 1.0, "total": "x", "idle": 0.0}]},
    {"boot": BOOT, "samples": [{"time": 1.0, "total": 1.0, "idle": 0.5, "monitor": True}]},
    "garbage",
])
def test_a_garbled_baseline_is_ignored(saved):
    counters = Counters({"cpu": saved}, clock=FakeClock(1000.0))
    result = cpu_check(counters, FakeHost(cpu=[cpu_times(1000.0, 500.0)]))
    assert result.value == 50.0 and "since boot" in result.message


def test_monitor_never_reads_below_zero_when_it_was_the_only_load():
    counters = Counters(cpu_baseline(1000.0, 500.0, at=999.8), clock=FakeClock(1000.0))
    result = cpu_check(counters, FakeHost(cpu=[cpu_times(1000.4, 500.2)]), own=lambda: 0.3)
    assert result.value == 0.0


# --- network ------------------------------------------------------------------------------------

def test_the_first_network_run_saves_a_baseline():
    counters = Counters({}, clock=FakeClock(1000.0))
    result = system.network([], counters, FakeHost(nics={"eth0": nic(100, 200), "lo": nic(5, 5)}))
    assert result.value is None and result.status == "ok"
    assert "baseline saved" in result.message
    assert counters.updates["net"] == {"boot": BOOT, "time": 1000.0, "nics": {"eth0": [100, 200, 0, 0, 0, 0]}}


def test_network_rates_are_bytes_per_second_since_the_last_run():
    counters = Counters(net_baseline(990.0, eth0=nic(1000, 5000), eth1=nic(0, 0)), clock=FakeClock(1000.0))
    host = FakeHost(nics={"eth0": nic(2000, 25000), "eth1": nic(500, 500), "lo": nic(10**9, 10**9)})
    result = system.network([], counters, host)
    assert result.status == "ok"
    assert result.unit == "B/s"
    assert result.details["eth0"] == {"rx_bytes_per_second": 2000.0, "tx_bytes_per_second": 100.0}
    assert result.value == 2000.0 + 100.0 + 50.0 + 50.0  # loopback is left out
    assert "lo" not in result.details


def test_new_errors_or_drops_warn_naming_the_interface():
    counters = Counters(net_baseline(990.0, eth0=nic(errin=3), eth1=nic()), clock=FakeClock(1000.0))
    host = FakeHost(nics={"eth0": nic(errin=3), "eth1": nic(errin=0, dropin=7)})
    result = system.network([], counters, host)
    assert result.status == "warning"
    assert "eth1" in result.message and "7 new dropin" in result.message
    assert "eth0" not in result.message.split("(")[0]  # old errors are not new
    assert result.details["eth1"]["new_dropin"] == 7


def test_a_counter_reset_is_a_note_not_an_alarm():
    counters = Counters(net_baseline(990.0, eth0=nic(10**6, 10**6, errin=50)), clock=FakeClock(1000.0))
    result = system.network([], counters, FakeHost(nics={"eth0": nic(10, 10)}))
    assert result.status == "ok"
    assert "reset" in result.details["eth0"]["note"]


def test_a_missing_configured_interface_warns():
    counters = Counters(net_baseline(990.0, eth0=nic()), clock=FakeClock(1000.0))
    result = system.network(["eth0", "wg0"], counters, FakeHost(nics={"eth0": nic(), "eth1": nic()}))
    assert result.status == "warning"
    assert "wg0 not found" in result.message
    assert set(result.details) == {"eth0"}  # only the configured interfaces


def test_a_reboot_restarts_the_network_baseline():
    counters = Counters(net_baseline(990.0, boot=BOOT - 60, eth0=nic(10**9, 10**9)), clock=FakeClock(1000.0))
    result = system.network([], counters, FakeHost(nics={"eth0": nic(10, 10)}))
    assert result.value is None and "baseline saved" in result.message
    assert counters.updates["net"]["boot"] == BOOT


# --- disk and inodes -------------------------------------------------------------------------------

def statvfs_of(blocks=1000, bfree=300, bavail=250, files=1000, ffree=250, favail=250, frsize=4096):
    stats = SimpleNamespace(f_blocks=blocks, f_bfree=bfree, f_bavail=bavail, f_frsize=frsize,
                            f_files=files, f_ffree=ffree, f_favail=favail)
    return lambda path: stats


@pytest.fixture
def fstab(tmp_path):
    path = tmp_path / "fstab"
    path.write_text("# <file system> <mount point> <type> <options> <dump> <pass>\n")
    return path


def test_disk_percent_counts_like_df(tmp_path, fstab):
    # df: used = blocks - free; percent = used / (used + available); root's reserve is neither.
    result = system.disk(str(tmp_path), Threshold(70, 90), fstab=str(fstab), statvfs=statvfs_of())
    assert result.value == 73.7  # 700 / 950
    assert result.status == "warning"
    assert result.details["total_bytes"] == 1000 * 4096
    assert result.details["free_bytes"] == 250 * 4096


def test_disk_percent_of_the_root_filesystem_agrees_with_df():
    df = shutil.which("df")
    if df is None:
        pytest.fail("df is part of coreutils and should be installed")
    out = subprocess.run([df, "--output=pcent", "/"], capture_output=True, text=True, check=True).stdout
    df_percent = int(out.splitlines()[1].strip().rstrip("%"))
    ours = system.disk("/", Threshold(90, 95)).value
    assert abs(math.ceil(ours) - df_percent) <= 1  # df rounds up to a whole percent


def test_inodes_percent_counts_used_inodes(tmp_path, fstab):
    result = system.inodes(str(tmp_path), Threshold(90, 95), fstab=str(fstab), statvfs=statvfs_of())
    assert (result.value, result.status) == (75.0, "ok")


def test_a_filesystem_without_inode_counts_is_ok(tmp_path, fstab):
    result = system.inodes(str(tmp_path), Threshold(90, 95), fstab=str(fstab), statvfs=statvfs_of(files=0))
    assert result.status == "ok" and "does not count inodes" in result.message


def test_a_missing_disk_path_is_critical_for_that_path_only(tmp_path, fstab):
    missing = str(tmp_path / "mnt" / "backups")
    result = system.disk(missing, Threshold(90, 95), fstab=str(fstab), statvfs=pytest.fail)
    assert result.status == "critical" and missing in result.message
    assert system.inodes(missing, Threshold(90, 95), fstab=str(fstab), statvfs=pytest.fail).status == "critical"
    assert system.disk(str(tmp_path), Threshold(90, 95), fstab=str(fstab), statvfs=statvfs_of()).status == "ok"


def test_a_disk_path_that_is_a_file_measures_the_filesystem_holding_it_like_df(tmp_path, fstab):
    df = shutil.which("df")
    out = subprocess.run([df, "--output=pcent", str(fstab)], capture_output=True, text=True, check=True).stdout
    result = system.disk(str(fstab), Threshold(99.9, 100), fstab=str(fstab))
    assert result.status == "ok", result.message
    assert abs(math.ceil(result.value) - int(out.splitlines()[1].strip().rstrip("%"))) <= 1
    assert result.details["path"] == str(fstab)


def test_a_path_in_fstab_that_is_not_mounted_is_critical(tmp_path, fstab):
    mount_point = tmp_path / "data"
    mount_point.mkdir()  # the empty folder under an unmounted filesystem
    fstab.write_text(f"UUID=1234 {mount_point} ext4 defaults 0 2\n")
    result = system.disk(str(mount_point), Threshold(90, 95), fstab=str(fstab), statvfs=statvfs_of())
    assert result.status == "critical"
    assert "not mounted" in result.message and str(fstab) in result.message


@pytest.mark.parametrize("line", [
    "UUID=1234 {mp} ext4 noauto 0 2",
    "UUID=1234 {mp} ext4 defaults,noauto,user 0 2",
    "# UUID=1234 {mp} ext4 defaults 0 2",
    "UUID=1234 {mp}/other ext4 defaults 0 2",
])
def test_fstab_entries_that_need_no_mount_are_measured(tmp_path, fstab, line):
    mount_point = tmp_path / "data"
    mount_point.mkdir()
    fstab.write_text(line.format(mp=mount_point) + "\n")
    result = system.disk(str(mount_point), Threshold(90, 95), fstab=str(fstab), statvfs=statvfs_of())
    assert result.status == "ok"


def test_a_disk_stuck_in_the_kernel_is_critical_and_the_run_returns(tmp_path, fstab):
    release = threading.Event()

    def dead_nfs(path):
        release.wait()
        return statvfs_of()(path)

    check = Check(f"disk:{tmp_path}", "system",
                  partial(system.disk, str(tmp_path), Threshold(90, 95), fstab=str(fstab), statvfs=dead_nfs),
                  timeout=0.3, on_timeout="critical")
    started = time.monotonic()
    try:
        run = run_checks([check, Check("load", "system", partial(system.load, Threshold(1.5, 3.0)))])
    finally:
        release.set()
    assert time.monotonic() - started < 5  # generous for a busy machine: statvfs never returns by itself
    assert [r.status for r in run.results][0] == "critical"
    assert "timed out" in run.results[0].message
    assert run.results[1].id == "load" and run.results[1].status != "unknown"


def test_disk_and_inode_checks_are_critical_when_they_time_out():
    from monitor import config

    cfg = config.build({"system": {"disk_paths": ["/", "/srv"]}}, None, "/")
    checks = {c.id: c for c in system.checks(cfg, Counters({}))}
    assert set(checks) == {"cpu", "memory", "swap", "load", "disk:/", "inodes:/", "disk:/srv", "inodes:/srv",
                           "network"}
    assert {cid for cid, c in checks.items() if c.on_timeout == "critical"} == {
        "disk:/", "inodes:/", "disk:/srv", "inodes:/srv"}


# --- load, memory, swap ------------------------------------------------------------------------------

def test_load_is_the_five_minute_average_per_cpu():
    result = system.load(Threshold(1.5, 3.0), getloadavg=lambda: (9.0, 6.0, 3.0), cpu_count=lambda: 4)
    assert (result.value, result.status) == (1.5, "warning")
    assert result.details == {"load1": 9.0, "load5": 6.0, "load15": 3.0, "cpus": 4}


def test_load_with_an_unknown_cpu_count_counts_one_cpu():
    result = system.load(Threshold(1.5, 3.0), getloadavg=lambda: (0.5, 3.5, 0.5), cpu_count=lambda: None)
    assert (result.value, result.status) == (3.5, "critical")


@pytest.mark.parametrize("percent, status", [(50.0, "ok"), (85.0, "warning"), (97.5, "critical")])
def test_memory_is_judged_on_the_percent_used(percent, status):
    total = 8 * 2**30
    host = FakeHost(memory=Memory(total, int(total * (1 - percent / 100)), percent))
    result = system.memory(Threshold(85, 95), host)
    assert (result.value, result.status) == (percent, status)
    assert f"{percent:.1f}%" in result.message and "8.0 GiB" in result.message


def test_swap_is_judged_on_the_percent_used():
    host = FakeHost(swap=Swap(total=2 * 2**30, used=int(1.7 * 2**30), free=int(0.3 * 2**30), percent=85.0))
    assert system.swap(Threshold(50, 80), host).status == "critical"


def test_a_host_without_swap_is_ok():
    result = system.swap(Threshold(50, 80), FakeHost(swap=Swap(0, 0, 0, 0.0)))
    assert result.status == "ok" and "no swap" in result.message


# --- /proc, read without psutil ---------------------------------------------------------------------

@pytest.fixture
def fake_proc(tmp_path):
    (tmp_path / "net").mkdir()
    (tmp_path / "stat").write_text(
        "cpu  400 10 200 600 50 5 5 1 30 0\n"
        "cpu0 200 5 100 300 25 2 2 0 15 0\n"
        "intr 12345 0 0\n"
        "btime 1700000000\n"
        "processes 4242\n")
    (tmp_path / "meminfo").write_text(
        "MemTotal:        1000 kB\nMemFree:          100 kB\nMemAvailable:     250 kB\n"
        "Buffers:           20 kB\nCached:            30 kB\nSwapTotal:       2000 kB\nSwapFree:         500 kB\n"
        "HugePages_Total:    0\n")
    (tmp_path / "net" / "dev").write_text(
        "Inter-|   Receive                                                |  Transmit\n"
        " face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n"
        "    lo:    5000      50    0    0    0     0          0         0     5000      50    0    0    0     0       0          0\n"
        "  eth0: 1000 10 1 2 0 0 0 0 2000 20 3 4 0 0 0 0\n")
    return ProcSource(str(tmp_path))


def test_proc_source_reads_boot_time_and_cpu_times(fake_proc):
    ticks = os.sysconf("SC_CLK_TCK")
    assert fake_proc.boot_time() == 1_700_000_000.0
    times = fake_proc.cpu_times()
    assert times.user == 400 / ticks and times.idle == 600 / ticks and times.iowait == 50 / ticks
    assert times.guest == 30 / ticks and times.guest_nice == 0


def test_proc_source_reads_memory_and_swap(fake_proc):
    assert fake_proc.virtual_memory() == Memory(total=1024_000, available=256_000, percent=75.0)
    assert fake_proc.swap_memory() == Swap(total=2048_000, used=1536_000, free=512_000, percent=75.0)


def test_proc_source_estimates_available_memory_on_old_kernels(fake_proc):
    meminfo = os.path.join(fake_proc.proc, "meminfo")
    with open(meminfo) as handle:
        lines = [line for line in handle if not line.startswith("MemAvailable")]
    with open(meminfo, "w") as handle:
        handle.writelines(lines)
    assert fake_proc.virtual_memory().available == (100 + 20 + 30) * 1024


def test_proc_source_reads_network_counters_like_psutil(fake_proc):
    nics = fake_proc.net_io_counters(pernic=True)
    assert set(nics) == {"lo", "eth0"}
    assert nics["eth0"] == NicCounters(bytes_sent=2000, bytes_recv=1000, packets_sent=20, packets_recv=10,
                                       errin=1, errout=3, dropin=2, dropout=4)


def test_proc_source_without_btime_is_an_error(fake_proc):
    with open(os.path.join(fake_proc.proc, "stat"), "w") as handle:
        handle.write("cpu  1 2 3 4\n")
    with pytest.raises(OSError, match="btime"):
        fake_proc.boot_time()
    assert fake_proc.cpu_times().idle == 4 / os.sysconf("SC_CLK_TCK")  # short lines are padded


def test_proc_source_matches_psutil_on_this_machine():
    ours = ProcSource()
    assert ours.virtual_memory().total == psutil.virtual_memory().total
    assert ours.swap_memory().total == psutil.swap_memory().total
    assert abs(ours.boot_time() - psutil.boot_time()) <= 1
    mine, theirs = ours.cpu_times(), psutil.cpu_times()
    for field in ("user", "system", "idle", "iowait"):
        assert abs(getattr(mine, field) - getattr(theirs, field)) < 3, field
    mine_nics, their_nics = ours.net_io_counters(pernic=True), psutil.net_io_counters(pernic=True)
    assert set(mine_nics) == set(their_nics)
    for name, counters in mine_nics.items():
        assert counters.bytes_recv <= their_nics[name].bytes_recv  # read first, counters only grow
        assert counters.errin == their_nics[name].errin


def test_cpu_from_proc_on_this_machine_is_a_sane_percent():
    counters = Counters({})
    result = system.cpu(CPU, counters, ProcSource())
    assert 0.0 <= result.value <= 100.0
    assert counters.updates["cpu"]["boot"] == ProcSource().boot_time()
    assert 0.0 < counters.updates["cpu"]["samples"][0]["monitor"]  # this test process's CPU so far


# --- mounts judged by the kernel's table, fstab read as `mount` reads it ------------------------------

def mountinfo_of(tmp_path, *points):
    """A mountinfo file listing `/` and `points` (written with the kernel's octal escapes)."""
    path = tmp_path / "mountinfo"
    lines = ["22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw"]
    for n, point in enumerate(points, start=30):
        escaped = str(point).replace("\\", "\\134").replace(" ", "\\040").replace("\t", "\\011")
        lines.append(f"{n} 22 254:0 /srv/source {escaped} rw,relatime shared:1 - ext4 /dev/vda rw")
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_a_bind_mount_listed_in_fstab_and_mounted_is_measured(tmp_path, fstab):
    # os.path.ismount is false for a bind mount from the same filesystem; the kernel's table is not.
    target = tmp_path / "bind"
    target.mkdir()
    fstab.write_text(f"/srv/source {target} none bind 0 0\n")
    mountinfo = mountinfo_of(tmp_path, target)
    for check in (system.disk, system.inodes):
        result = check(str(target), Threshold(90, 95), fstab=str(fstab), statvfs=statvfs_of(), mountinfo=mountinfo)
        assert result.status == "ok", result.message
    unmounted = system.disk(str(target), Threshold(90, 95), fstab=str(fstab), statvfs=statvfs_of(),
                            mountinfo=mountinfo_of(tmp_path))
    assert unmounted.status == "critical" and "not mounted" in unmounted.message


@pytest.mark.parametrize("written", ["{mp}/", "{mp}//", "{mp}/./"])
def test_fstab_mount_points_are_normalised_like_mount_does(tmp_path, fstab, written):
    mount_point = tmp_path / "unm2"
    mount_point.mkdir()
    fstab.write_text("UUID=1234 " + written.format(mp=mount_point, parent=tmp_path) + " ext4 defaults 0 2\n")
    result = system.disk(str(mount_point), Threshold(90, 95), fstab=str(fstab), statvfs=statvfs_of(),
                         mountinfo=mountinfo_of(tmp_path))
    assert result.status == "critical" and "listed in" in result.message and "not mounted" in result.message


def test_octal_escapes_in_fstab_and_mountinfo_are_read_as_mount_reads_them(tmp_path, fstab):
    mount_point = tmp_path / "with space"
    mount_point.mkdir()
    fstab.write_text(f"UUID=1234 {tmp_path}/with\\040space ext4 defaults 0 2\n")
    result = system.disk(str(mount_point), Threshold(90, 95), fstab=str(fstab), statvfs=statvfs_of(),
                         mountinfo=mountinfo_of(tmp_path))
    assert result.status == "critical" and f"{mount_point} is listed in" in result.message
    mounted = system.disk(str(mount_point), Threshold(90, 95), fstab=str(fstab), statvfs=statvfs_of(),
                          mountinfo=mountinfo_of(tmp_path, mount_point))
    assert mounted.status == "ok", mounted.message


def test_fstab_is_read_like_util_linux_reads_it(tmp_path, fstab):
    findmnt = shutil.which("findmnt")
    if findmnt is None:
        pytest.fail("findmnt is part of util-linux and should be installed")
    fstab.write_bytes(b"# comment\n"
                      b"UUID=1 /x/unm2/ ext4 defaults 0 2\n"
                      b"UUID=2 /x/with\\040space ext4 defaults 0 2\n"
                      b"  UUID=3\t/x/tab\\011and\\134backslash  xfs defaults 0 0\n"
                      b"/dev/sdb none swap sw 0 0\n"
                      b"UUID=4 /x/caf\xc3\xa9 ext4 rw 0 0\n")
    out = subprocess.run([findmnt, "--tab-file", str(fstab), "-n", "-J", "-o", "TARGET,FSTYPE,OPTIONS"],
                         capture_output=True, text=True, check=True).stdout
    theirs = [normal_mount_point(fs["target"]) for fs in json.loads(out)["filesystems"] if fs["fstype"] != "swap"]
    assert system.fstab_mount_points(str(fstab)) == theirs
    assert theirs == ["/x/unm2", "/x/with space", "/x/tab\tand\\backslash", "/x/café"]


def test_mountinfo_is_read_like_util_linux_reads_it():
    findmnt = shutil.which("findmnt")
    if findmnt is None:
        pytest.fail("findmnt is part of util-linux and should be installed")
    for _ in range(10):  # something else on the machine may mount or unmount meanwhile: read until still
        before = system.mount_points()
        out = subprocess.run([findmnt, "--kernel", "-n", "-J", "-o", "TARGET", "--list"],
                             capture_output=True, text=True, check=True).stdout
        if system.mount_points() == before:
            break
    assert before == {fs["target"] for fs in json.loads(out)["filesystems"]}


def test_a_path_under_an_unmounted_fstab_mount_point_is_critical(tmp_path, fstab):
    inside = tmp_path / "data" / "backups"
    inside.mkdir(parents=True)
    fstab.write_text(f"UUID=1234 {tmp_path}/data ext4 defaults 0 2\n")
    result = system.disk(str(inside), Threshold(90, 95), fstab=str(fstab), statvfs=statvfs_of(),
                         mountinfo=mountinfo_of(tmp_path))
    assert result.status == "critical"
    assert result.message == f"{inside} is under {tmp_path}/data, listed in {fstab} but not mounted"
    mounted = system.disk(str(inside), Threshold(90, 95), fstab=str(fstab), statvfs=statvfs_of(),
                          mountinfo=mountinfo_of(tmp_path, tmp_path / "data"))
    assert mounted.status == "ok"


def test_a_real_bind_mount_listed_in_fstab_is_mounted(tmp_path, fstab):
    if os.geteuid() != 0:
        pytest.skip("mount --bind needs root")
    source, target = tmp_path / "source", tmp_path / "target"
    source.mkdir()
    target.mkdir()
    fstab.write_text(f"{source} {target} none bind 0 0\n")
    assert system.disk(str(target), Threshold(99.9, 100), fstab=str(fstab)).status == "critical"  # not yet
    done = subprocess.run(["mount", "--bind", str(source), str(target)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"mount --bind is not allowed here: {done.stderr.strip()}")
    try:
        assert not os.path.ismount(target)  # the trap: same filesystem, same device
        for check in (system.disk, system.inodes):
            result = check(str(target), Threshold(99.9, 100), fstab=str(fstab))
            assert result.status == "ok", result.message
    finally:
        subprocess.run(["umount", str(target)], check=True)


def as_nobody(check):
    """Run `check()` as user nobody (root forks and drops privileges); return (status, message)."""
    if os.geteuid() != 0:
        result = check()
        return result.status, result.message
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop root, run the check, report, leave without running pytest's exit
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            result = check()
            os.write(write_end, json.dumps([result.status, result.message]).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as handle:
        data = handle.read()
    os.waitpid(pid, 0)
    return tuple(json.loads(data))


def test_a_path_that_exists_but_cannot_be_reached_says_permission_denied(tmp_path):
    private = tmp_path / "private"
    inside = private / "data"
    inside.mkdir(parents=True)
    private.chmod(0o000)  # even its owner cannot search it (root can: the check runs as nobody)
    try:
        status, message = as_nobody(partial(system.disk, str(inside), Threshold(90, 95)))
        assert status == "unknown"
        assert "permission denied" in message and "does not exist" not in message
        status, message = as_nobody(partial(system.inodes, str(inside), Threshold(90, 95)))
        assert status == "unknown" and "permission denied" in message
    finally:
        private.chmod(0o700)


def test_statvfs_refused_says_permission_denied(tmp_path, fstab):
    def refused(path):
        raise PermissionError(13, "Permission denied", path)

    user = pwd.getpwuid(os.geteuid()).pw_name
    result = system.disk(str(tmp_path), Threshold(90, 95), fstab=str(fstab), statvfs=refused)
    assert (result.status, result.message) == (
        "unknown", f"{tmp_path}: permission denied (monitor runs as {user}), cannot measure it")


def test_a_missing_kernel_mount_table_falls_back_to_the_path(tmp_path, fstab):
    mount_point = tmp_path / "data"
    mount_point.mkdir()
    fstab.write_text(f"UUID=1234 {mount_point}/ ext4 defaults 0 2\n")
    result = system.disk(str(mount_point), Threshold(90, 95), fstab=str(fstab), statvfs=statvfs_of(),
                         mountinfo=str(tmp_path / "no-proc"))
    assert result.status == "critical" and "not mounted" in result.message


def test_a_file_in_disk_paths_is_measured_in_a_real_health_run(tmp_path, run_monitor, envelope):
    data = tmp_path / "scraper.db"
    data.write_bytes(b"x")
    missing = tmp_path / "gone"
    config = f'[system]\ndisk_paths = ["{data}", "{missing}"]\n'
    proc = run_monitor(["health", "--format", "json", "--only", "system"], tmp_path, config=config)
    checks = envelope(proc)["checks"]
    assert checks[f"disk:{data}"]["status"] != "critical", checks[f"disk:{data}"]["message"]
    assert checks[f"disk:{data}"]["details"]["total_bytes"] == os.statvfs(tmp_path).f_blocks * os.statvfs(
        tmp_path).f_frsize
    assert checks[f"disk:{missing}"]["status"] == "critical"
    assert "does not exist" in checks[f"disk:{missing}"]["message"]


def write_self_stat(proc_source, utime_ticks, stime_ticks):
    (Path(proc_source.proc) / "self").mkdir(exist_ok=True)
    fields = ["S", "1", "1", "1", "0", "-1", "4194560", "100", "0", "0", "0", str(utime_ticks), str(stime_ticks),
              "0", "0", "20", "0", "3", "0", "12345"]
    (Path(proc_source.proc) / "self" / "stat").write_text(f"4242 (mon) itor) {' '.join(fields)}\n")


def test_proc_source_reads_this_process_cpu_time(fake_proc):
    ticks = os.sysconf("SC_CLK_TCK")
    assert fake_proc.process_cpu() == 0.0  # no self/stat: nothing known, nothing left out
    write_self_stat(fake_proc, 30, 12)
    assert fake_proc.process_cpu() == 42 / ticks
    real = ProcSource().process_cpu()
    assert 0 < real and abs(real - sum(os.times()[:2])) < 0.5


def test_cpu_from_a_fake_proc_leaves_the_process_own_time_out(fake_proc):
    # /proc/stat of the fixture: total 1271 ticks of which idle+iowait 650, so 621 busy since boot.
    ticks = os.sysconf("SC_CLK_TCK")
    write_self_stat(fake_proc, 100, 21)  # this process: 121 of the busy ticks
    counters = Counters({}, clock=FakeClock(1000.0))
    result = system.cpu(CPU, counters, fake_proc, wall=lambda: 1_700_000_000.0 + 3600)
    assert result.value == round(100 * (621 - 121) / 1271, 1)
    assert "since boot 1h ago" in result.message
    assert counters.updates["cpu"]["samples"][0]["monitor"] == round(121 / ticks, 3)


@pytest.mark.parametrize("value, error", [
    ('"soon"', 'config error: system.cpu_min_span: expected a duration like "5s", got "soon"'),
    ('"0s"', 'config error: system.cpu_min_span: expected a duration above zero, got "0s"'),
])
def test_a_bad_cpu_min_span_is_one_clear_line_and_exit_3(tmp_path, run_monitor, value, error):
    proc = run_monitor(["health"], tmp_path, config=f"[system]\ncpu_min_span = {value}\n")
    assert (proc.returncode, proc.stdout, proc.stderr.strip()) == (3, "", error)


def test_cpu_min_span_reaches_the_cpu_check(tmp_path, run_monitor, envelope):
    # Saved samples 40 s and 5 s old: with 30s the window starts at the older, with 3s at the newer.
    source = ProcSource()
    times = source.cpu_times()
    total, idle = sum(times) - times.guest - times.guest_nice, times.idle + times.iowait
    now = time.monotonic()
    samples = [{"time": now - 40, "total": total - 80, "idle": idle - 60, "monitor": 0.0},
               {"time": now - 5, "total": total - 10, "idle": idle - 8, "monitor": 0.0}]
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    spans = {}
    for min_span in ("30s", "3s"):
        (state / "counters.json").write_text(json.dumps({"cpu": {"boot": source.boot_time(), "samples": samples}}))
        proc = run_monitor(["health", "--format", "json", "--only", "system"], tmp_path, steady_cpu=False,
                           config=f'[system]\ncpu_min_span = "{min_span}"\n')
        spans[min_span] = envelope(proc)["checks"]["cpu"]["details"]["span_seconds"]
    # The runs start a moment after the samples were written (generous bounds for a busy machine).
    assert 40 <= spans["30s"] < 55 and 5 <= spans["3s"] < 20, spans
