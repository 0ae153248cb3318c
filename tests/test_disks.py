"""Disk and inode fill ETAs on a real filesystem: a small tmpfs mounted here, filled between
runs whose clock is injected, the carried state handed from one run to the next as
`jobs.run_job` does (issue 17 item 1)."""

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from monitor import config as monitor_config
from monitor import eta
from monitor.alerts.messages import headline
from monitor import checks
from monitor.checks import disks, system
from monitor.results import Threshold, with_identity
from monitor.state import Carried

MIB = 1024 * 1024
SETTINGS = eta.Settings(window=6 * 3600, min_span=30 * 60)
FILL_ETA = Threshold(3 * 86400, 12 * 3600, lower_is_worse=True)


@pytest.fixture
def tmpfs(tmp_path):
    """A 4 MiB tmpfs with room for 64 inodes, mounted for this test (root only: CI runs as root)."""
    if os.geteuid() != 0:
        pytest.fail("mounting a tmpfs needs root; run this test as root (CI does), it is not skipped")
    point = tmp_path / "fs"
    point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,nr_inodes=64,mode=0700", "monitor-eta-test",
                    str(point)], check=True, capture_output=True)
    try:
        yield point
    finally:
        subprocess.run(["umount", "-l", str(point)], check=True)


@pytest.fixture
def fstab(tmp_path):
    path = tmp_path / "fstab"
    path.write_text("")  # the host's fstab has no say over a test mount
    return path


class Runs:
    """Health runs of one disk check: a clock that moves only when told, state carried over."""

    def __init__(self, path, fstab, what="disk", start=1_800_000_000.0):
        self.path, self.fstab, self.what = str(path), str(fstab), what
        self.now, self.saved = start, {}

    def run(self, after: float = 0.0):
        self.now += after
        carried = Carried(self.saved)
        trend = disks.Trend(f"{self.what}:{self.path}", carried, SETTINGS, FILL_ETA, now=lambda: self.now)
        measure = disks.disk if self.what == "disk" else disks.inodes
        result = measure(self.path, Threshold(90, 95), fstab=self.fstab, trend=trend)
        self.saved = json.loads(json.dumps(carried.to_write(keep_untouched=True)))  # as the file holds it
        return result


def write(folder: Path, name: str, size: int) -> None:
    (folder / name).write_bytes(b"\0" * size)


def test_a_filling_disk_says_when_it_will_be_full_and_a_deletion_restarts_the_series(tmpfs, fstab):
    runs = Runs(tmpfs, fstab)
    first = runs.run()
    assert first.status == "ok" and first.details["eta_seconds"] is None
    assert first.details["eta_note"] == "no trend yet: 1 sample(s) over 0ms, needs 4 over 30m"
    assert "full" not in first.message
    for i in range(3):  # 256 KiB every 10 minutes: 1.5 MiB an hour
        write(tmpfs, f"chunk-{i}", MIB // 4)
        result = runs.run(after=600)
    assert result.value == 18.8  # 768 KiB of 4 MiB: far below disk_percent
    assert result.details["eta_seconds"] == 7800  # 3.25 MiB left at 1.5 MiB/h
    assert result.status == "critical"  # 2h10m is within fill_eta's critical 12h
    assert result.message == f"Disk {tmpfs} 18.8% used (3.2 MiB free of 4.0 MiB), full in ~2h10m " \
                             "(at 1.5 MiB/h over 30m)"
    # The alert's first line shows no number (18.8 % is under 95 %): its message says why.
    assert headline(with_identity(result, f"disk:{tmpfs}", "system", 1.0), "critical") == ""

    for i in range(3):
        os.unlink(tmpfs / f"chunk-{i}")
    freed = runs.run(after=600)
    assert freed.status == "ok" and freed.details["eta_seconds"] is None
    assert freed.details["eta_note"].startswith("series restarted: usage dropped; no trend yet: 1 sample(s)")
    assert runs.saved[f"eta:disk:{tmpfs}"] == [[runs.now, 0, 4 * MIB]]


def test_a_slowly_filling_disk_warns_and_a_steady_one_stays_ok(tmpfs, fstab):
    runs = Runs(tmpfs, fstab)
    runs.run()
    for i in range(4):  # 64 KiB an hour: 4 MiB in about 2.7 days
        write(tmpfs, f"slow-{i}", 64 * 1024)
        result = runs.run(after=3600)
    assert result.status == "warning" and 2 * 86400 < result.details["eta_seconds"] < 3 * 86400
    assert "full in ~2d" in result.message and "(at 64.0 KiB/h over 4h)" in result.message
    for _ in range(6):  # six quiet hours: the window's line flattens, no longer under 3 days
        steady = runs.run(after=3600)
    assert steady.status == "ok", steady.message


def test_inodes_get_their_own_eta(tmpfs, fstab):
    runs = Runs(tmpfs, fstab, what="inodes")
    runs.run()
    for i in range(4):
        for j in range(6):  # 6 files every 10 minutes: 36 an hour, of 64 inodes
            (tmpfs / f"f{i}-{j}").touch()
        result = runs.run(after=600)
    assert result.status == "critical"
    assert result.details["eta_seconds"] == pytest.approx((64 - 25) / 36 * 3600, abs=1)  # root + 24 files used
    assert "full in ~1h5m (at 36 inodes/h over 40m)" in result.message
    # Exported beside the disk's, so the critical ETA reaches Alertmanager too (HostInodesFillingUp).
    [(name, _, labels, sample, value)] = checks.exported(with_identity(result, f"inodes:{tmpfs}", "system", 1.0))
    assert (name, labels, sample, value) == ("monitor_inodes_fill_eta_seconds", ("path",), {"path": str(tmpfs)},
                                             result.details["eta_seconds"])


def test_a_full_disk_says_so_once(tmpfs, fstab):
    runs = Runs(tmpfs, fstab)
    runs.run()
    for i in range(3):
        write(tmpfs, f"chunk-{i}", MIB)
        runs.run(after=600)
    with open(tmpfs / "rest", "wb") as rest:  # what is left, to the last block
        try:
            while True:
                rest.write(b"\0" * 65536)
                rest.flush()
        except OSError:
            pass
    full = runs.run(after=600)
    assert full.value == 100.0 and full.status == "critical" and full.details["eta_seconds"] == 0
    assert full.message.endswith(", already full, at 6.0 MiB/h over 40m"), full.message
    assert full.details["eta_note"] == "already full, at 6.0 MiB/h over 40m"


def test_a_missing_path_keeps_no_series(tmp_path, fstab):
    runs = Runs(tmp_path / "gone", fstab)
    assert runs.run().status == "critical"
    assert runs.saved is None or not any(key.startswith("eta:") for key in runs.saved)


def test_health_builds_the_disk_checks_in_place_with_the_carried_state(tmp_path):
    cfg = monitor_config.build({"system": {"disk_paths": ["/", str(tmp_path)]}}, None, str(tmp_path))
    carried = Carried({})
    ids = [c.id for c in system.checks(cfg, carried)]
    assert ids == ["cpu", "memory", "swap", "load", "disk:/", "inodes:/", f"disk:{tmp_path}",
                   f"inodes:{tmp_path}", "network"]
    for check in system.checks(cfg, carried):
        if check.id.startswith(("disk:", "inodes:")):
            assert check.probe().details["eta_note"].startswith("no trend yet: 1 sample(s)")
    assert set(carried.updates) >= {"eta:disk:/", "eta:inodes:/", f"eta:disk:{tmp_path}"}


def test_fill_eta_is_a_config_key_with_the_documented_defaults(tmp_path):
    cfg = monitor_config.build({}, None, str(tmp_path))["system"]
    assert (cfg["eta_window"], cfg["eta_min_span"]) == (6 * 3600, 30 * 60)
    assert cfg["fill_eta"] == FILL_ETA


# --- the real `monitor health`: the series is carried in state/counters.json -----------------------

def test_monitor_health_reports_the_fill_eta_and_exports_it(tmp_path, tmpfs, run_monitor, envelope):
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    now = time.time()
    # Earlier runs, one every 10 minutes, saw 256 KiB more each time (as this test writes it now).
    write(tmpfs, "data", 3 * MIB // 4)
    key = f"eta:disk:{tmpfs}"
    (state / "counters.json").write_text(json.dumps(
        {key: [[now - 600 * (3 - i), i * MIB // 4, 4 * MIB] for i in range(3)]}))
    text = tmp_path / "textfile"
    text.mkdir()
    proc = run_monitor(["health", "--only", "system", "--format", "json", "--no-notify", "--textfile-dir",
                        str(text)], tmp_path,
                       config=f'[system]\ndisk_paths = ["{tmpfs}"]\nnetwork_interfaces = ["lo"]\n')
    check = envelope(proc)["checks"][f"disk:{tmpfs}"]
    # 3.25 MiB left at 1.5 MiB/h is 7800 s; the run's own point comes a little after `now`,
    # which flattens the line a little (9000: the run started up to 4 minutes late, generous).
    assert 7800 <= check["details"]["eta_seconds"] < 9000, check
    assert check["status"] == "critical" and ", full in ~2h" in check["message"]
    prom = (text / "monitor_health.prom").read_text()
    assert f'monitor_disk_fill_eta_seconds{{path="{tmpfs}"}} {float(check["details"]["eta_seconds"])}' in prom
    saved = json.loads((state / "counters.json").read_text())[key]
    assert len(saved) == 4 and saved[-1][1:] == [3 * MIB // 4, 4 * MIB]


def test_no_eta_metric_while_the_disk_is_not_growing(tmp_path, tmpfs, run_monitor, envelope):
    text = tmp_path / "textfile"
    text.mkdir()
    proc = run_monitor(["health", "--only", "system", "--format", "json", "--no-notify", "--textfile-dir",
                        str(text)], tmp_path, config=f'[system]\ndisk_paths = ["{tmpfs}"]\n')
    check = envelope(proc)["checks"][f"disk:{tmpfs}"]
    assert check["details"]["eta_seconds"] is None and check["details"]["eta_note"].startswith("no trend yet")
    prom = (text / "monitor_health.prom").read_text()
    assert f'monitor_disk_usage_percent{{path="{tmpfs}"}}' in prom and "monitor_disk_fill_eta_seconds{" not in prom


def test_monitor_health_drops_the_series_of_a_disk_no_longer_checked(tmp_path, tmpfs, run_monitor, envelope):
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    now = time.time()
    (state / "counters.json").write_text(json.dumps({
        "eta:disk:/removed": [[now - 50 * 3600, 1, 10]],      # its newest point older than 48 h
        "eta:quota:retired": [[now - 49 * 3600, 1, 10]],
        "eta:disk:/recent": [[now - 3600, 1, 10]],            # not checked this run, but recent: kept
    }))
    proc = run_monitor(["health", "--only", "system", "--format", "json", "--no-notify"], tmp_path,
                       config=f'[system]\ndisk_paths = ["{tmpfs}"]\nnetwork_interfaces = ["lo"]\n')
    envelope(proc)
    saved = json.loads((state / "counters.json").read_text())
    assert sorted(k for k in saved if k.startswith("eta:")) == ["eta:disk:/recent", f"eta:disk:{tmpfs}",
                                                                f"eta:inodes:{tmpfs}"]
