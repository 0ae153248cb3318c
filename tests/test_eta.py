"""The ETA arithmetic (monitor/eta.py): a bounded series, a least-squares trend, time to 100 %.

Times are injected numbers: nothing here waits or reads a clock.
"""

import json

import pytest

from monitor import config, eta
from monitor.config import schema

HOUR = 3600.0
SETTINGS = eta.Settings(window=6 * HOUR, min_span=30 * 60)


def grown(start_used: float, per_hour: float, runs: int, every: float = 300.0, total: float = 1000.0,
          t0: float = 1_700_000_000.0):
    """The series `runs` health runs leave, `every` seconds apart, used growing by `per_hour`."""
    points, now = [], t0
    for i in range(runs):
        now = t0 + i * every
        points, _ = eta.append(points, now, start_used + per_hour * (now - t0) / HOUR, total)
    return points, now


def test_a_steady_growth_gives_the_time_to_full():
    points, now = grown(500.0, 50.0, runs=13)  # an hour of runs, 50 units an hour, 550 of 1000 used
    found = eta.estimate(points, now, SETTINGS)
    assert found.seconds == pytest.approx(9 * HOUR)  # 450 left at 50 an hour
    assert found.rate * HOUR == pytest.approx(50.0)
    assert (found.samples, found.span) == (13, HOUR)
    assert found.note == "at 0.0138889/s over 1h"


def test_the_fit_is_least_squares_so_noise_around_a_trend_does_not_move_it_much():
    points, now = [], 0.0
    for i, wobble in enumerate([0, 3, -2, 4, -3, 1, -4, 2, 0, -1, 3, -2, 0]):
        now = i * 300.0
        points, _ = eta.append(points, now, 100 + 10 * i + wobble, 1000)
    assert eta.slope(points) * 300 == pytest.approx(10, rel=0.1)


@pytest.mark.parametrize("runs, every, why", [
    (3, 900.0, "3 sample(s) over 30m"),   # span enough, too few samples
    (6, 300.0, "6 sample(s) over 25m"),   # samples enough, span too short
])
def test_no_eta_without_four_samples_over_the_minimum_span(runs, every, why):
    points, now = grown(500.0, 50.0, runs=runs, every=every)
    found = eta.estimate(points, now, SETTINGS)
    assert found.seconds is None
    assert found.note == f"no trend yet: {why}, needs 4 over 30m"


def test_four_samples_over_exactly_the_minimum_span_are_enough():
    points, now = grown(500.0, 50.0, runs=4, every=600.0)
    assert eta.estimate(points, now, SETTINGS).seconds == pytest.approx(9.5 * HOUR)


def test_a_shrinking_or_flat_series_has_no_eta_and_says_so():
    points, now = grown(500.0, -5.0, runs=13)
    found = eta.estimate(points, now, SETTINGS, lambda r: f"{r * HOUR:+.0f}/h")
    assert found.seconds is None and found.note == "not growing (-5/h over 1h)"
    flat, now = grown(500.0, 0.0, runs=13)
    assert eta.estimate(flat, now, SETTINGS).seconds is None


def test_only_the_window_counts():
    # Ten hours flat, then an hour at 100 an hour: the 1 h window sees only the growth.
    points, now = grown(100.0, 0.0, runs=121)
    for i in range(1, 13):
        points, _ = eta.append(points, now + i * 300, 100 + 100 * i * 300 / HOUR, 1000)
    now += 12 * 300
    assert eta.estimate(points, now, eta.Settings(HOUR, 30 * 60)).seconds == pytest.approx(8 * HOUR)  # 800 left
    assert eta.estimate(points, now, eta.Settings(10 * HOUR, 30 * 60)).seconds > 20 * HOUR


def test_a_full_series_is_full_now_and_says_it_once():
    points, now = grown(990.0, 20.0, runs=13)
    found = eta.estimate(points, now, SETTINGS, lambda r: f"{r * HOUR:.0f}/h")
    assert found.seconds == 0.0 and found.note == "already full, at 20/h over 1h"
    assert eta.told(found) == "already full, at 20/h over 1h"  # not "full now (already full (...))"
    spent = eta.estimate(points, now, SETTINGS, lambda r: f"{r * HOUR:.0f} calls/h", "exhausted")
    assert eta.told(spent, "exhausted") == "already exhausted, at 20 calls/h over 1h"
    growing, now = grown(500.0, 50.0, runs=13)
    assert eta.told(eta.estimate(growing, now, SETTINGS, lambda r: f"{r * HOUR:.0f}/h")) == "full in ~9h (at 50/h over 1h)"
    assert eta.when(found.seconds) == "now" and eta.when(5 * HOUR + 600) == "in ~5h10m"


def test_a_deletion_restarts_the_series_but_noise_does_not():
    points, now = grown(500.0, 50.0, runs=13)
    kept, why = eta.append(points, now + 300, points[-1][1] - 5, 1000)  # 0.5 % of the total: noise
    assert why == "" and len(kept) == 14
    kept, why = eta.append(points, now + 300, points[-1][1] - 11, 1000)  # 1.1 %: files deleted
    assert why == "usage dropped" and kept == [[now + 300, points[-1][1] - 11, 1000]]


def test_a_new_total_or_a_clock_set_back_restarts_the_series():
    points, now = grown(500.0, 50.0, runs=13)
    assert eta.append(points, now + 300, 600, 2000) == ([[now + 300, 600, 2000]], "the total changed")
    assert eta.append(points, now - 60, 600, 1000) == ([[now - 60, 600, 1000]], "the clock went back")


def test_a_total_that_wobbles_within_one_percent_keeps_the_series():
    # ZFS and btrfs: used + available moves as metadata is written; XFS: fewer inodes as blocks
    # fill. Each run's total a little off the last one's, the series goes on and the ETA stands.
    points, now = [], 0.0
    for i, total in enumerate([1000, 1004, 998, 1003, 995, 999, 1002, 996, 1001, 994, 997, 1000, 993]):
        now = i * 300.0
        points, why = eta.append(points, now, 500 + 50 * now / HOUR, total)
        assert why == ""
    assert len(points) == 13
    assert eta.estimate(points, now, SETTINGS).seconds == pytest.approx((993 - 550) / 50 * HOUR, rel=0.01)
    # XFS's inode count shrinking run after run by less than 1 % each time: still one series.
    shrinking = []
    for i in range(13):
        shrinking, why = eta.append(shrinking, i * 300.0, 100 + i, 10_000 * 0.995 ** i)
        assert why == ""
    # More than 1 %: another filesystem, or another quota limit.
    assert eta.append(points, now + 300, 560, 993 * 1.011)[1] == "the total changed"
    assert eta.append(points, now + 300, 560, 993 * 0.989)[1] == "the total changed"


def test_series_not_touched_for_longer_than_they_are_kept_are_dropped():
    now = 1_900_000_000.0
    previous = {
        "eta:disk:/old": [[now - eta.KEEP_SECONDS - 60, 5, 10]],           # a disk no longer configured
        "eta:quota:gone": [[now - 3 * 86400, 1, 10], [now - 2 * 86400 - 1, 2, 10]],
        "eta:disk:/srv": [[now - 3 * 86400, 1, 10], [now - 3600, 2, 10]],  # old points, a recent one
        "eta:inodes:/junk": "not a series",
        "cpu": {"time": 1},                                                 # not a series: not ours
    }
    assert sorted(eta.drop_stale(previous, now)) == ["eta:disk:/old", "eta:inodes:/junk", "eta:quota:gone"]
    assert sorted(previous) == ["cpu", "eta:disk:/srv"]


def test_the_series_stays_bounded_and_keeps_the_recent_runs_dense():
    points, now = grown(0.0, 1.0, runs=3 * 24 * 12)  # three days of runs every 5 minutes
    assert len(points) == eta.MAX_POINTS
    assert now - points[0][0] <= eta.KEEP_SECONDS
    assert len(json.dumps(points)) < 4096  # a few KB in state/counters.json
    ages = [now - p[0] for p in points]
    assert ages[-12:] == [3300.0 - 300 * i for i in range(12)]  # the last hour: every run
    recent = [p for p in points if now - p[0] <= 6 * HOUR]
    assert len(recent) >= 30  # enough for the default window's fit
    assert eta.estimate(points, now, SETTINGS).rate * HOUR == pytest.approx(1.0)


def test_every_minute_for_two_days_is_thinned_too():
    points, now = grown(0.0, 1.0, runs=2 * 24 * 60, every=60.0)
    assert len(points) == eta.MAX_POINTS
    assert len([p for p in points if now - p[0] <= 30 * 60]) >= 10


@pytest.mark.parametrize("saved", [None, "junk", {"a": 1}, [[1, 2]], [[1, "2", 3]], [[1, 2, 0]], [[1, True, 3]],
                                   [[1, float("nan"), 3]]])
def test_a_garbled_saved_series_is_dropped(saved):
    assert eta.points_of(saved) == []


def test_a_saved_series_is_read_back_oldest_first():
    assert eta.points_of([[5, 2, 10], [1, 1, 10], "x"]) == [[1, 1, 10], [5, 2, 10]]


# --- the settings: one that cannot work is a config error ---------------------------------------

@pytest.mark.parametrize("system, error", [
    ({"eta_window": "72h"}, "system.eta_window: at most 48h (the series keeps no older point), got 3d"),
    ({"eta_window": "1h", "eta_min_span": "1h"},
     "system.eta_min_span: must be shorter than eta_window (1h), got 1h: no ETA could ever be given"),
    ({"eta_window": "50h", "eta_min_span": "3d"},  # both wrong: the window is told, once
     "system.eta_window: at most 48h (the series keeps no older point), got 2d2h"),
    ({"eta_min_span": "7h"}, "system.eta_min_span: must be shorter than eta_window (6h), got 7h: no ETA could "
                             "ever be given"),
])
def test_eta_settings_that_cannot_give_an_eta_are_one_config_error(tmp_path, system, error):
    with pytest.raises(config.ConfigError) as bad:
        config.build({"system": system}, None, str(tmp_path))
    assert bad.value.errors == [error]


def test_the_longest_window_and_a_profile_s_settings_are_checked_too(tmp_path):
    built = config.build({"system": {"eta_window": "48h", "eta_min_span": "47h"}}, None, str(tmp_path))
    assert built["system"]["eta_window"] == eta.KEEP_SECONDS == schema.ETA_KEEP_SECONDS
    with pytest.raises(config.ConfigError) as bad:
        config.build({"env": {"dev": {"system": {"eta_window": "20m"}}}}, "dev", str(tmp_path))
    assert bad.value.errors == ["system.eta_min_span: must be shorter than eta_window (20m), got 30m: no ETA "
                                "could ever be given"]


def test_monitor_refuses_such_a_config_with_one_line_and_exit_3(tmp_path, run_monitor):
    proc = run_monitor(["health", "--format", "json"], tmp_path, config='[system]\neta_window = "3d"\n',
                       steady_cpu=False)
    assert proc.returncode == 3 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == ["config error: system.eta_window: at most 48h (the series keeps no "
                                                "older point), got 3d"]
    assert not (tmp_path / "state").exists()  # nothing written
