"""Quota exhaustion ETAs against a real loopback provider whose remaining calls fall between
runs (issue 17 item 2): the clock is injected, the carried state handed from run to run."""

import json

import pytest
from prometheus_client import generate_latest

from monitor import eta
from monitor.checks import quotas
from monitor.fleet import metrics
from monitor.results import Threshold, with_identity
from monitor.state import Carried
from tests.loopback import server, session  # noqa: F401 (fixtures)

START = 1_800_000_000.0  # 2027-01-15 08:00 UTC
SETTINGS = eta.Settings(window=6 * 3600, min_span=30 * 60)


def entry(url, **more):
    """A `[[quotas]]` entry as the config loader returns it."""
    base = {"name": "etherscan", "url": url, "headers": {}, "remaining_header": "X-RateLimit-Remaining",
            "remaining_json": None, "limit_header": "X-RateLimit-Limit", "limit_json": None, "limit": None,
            "remaining_percent": Threshold(20, 5, lower_is_worse=True), "timeout": 2.0,
            "reset_header": None, "reset_every": None}
    return {**base, **more}


class Provider:
    """The loopback provider's answer, changed by the test between runs."""

    def __init__(self, server, remaining=10000, limit=10000, **headers):
        self.remaining, self.limit, self.headers = remaining, limit, headers
        self.url = server.route("/quota", self.answer)

    def answer(self, handler):
        headers = {"X-RateLimit-Remaining": str(self.remaining), "X-RateLimit-Limit": str(self.limit),
                   **{k.replace("_", "-"): str(v) for k, v in self.headers.items()}}
        handler.send_whole(200, headers, b"{}")


class Runs:
    def __init__(self, cfg, session):
        self.cfg, self.session, self.now, self.saved = cfg, session, START, {}

    def run(self, after: float = 0.0):
        self.now += after
        carried = Carried(self.saved)
        result = quotas.quota(self.cfg, self.session, environ={}, trend=(carried, SETTINGS, lambda: self.now))
        self.saved = json.loads(json.dumps(carried.to_write(keep_untouched=True)))
        return result


def spend(provider, runs, calls_per_run, count, every=600.0):
    result = None
    for _ in range(count):
        provider.remaining -= calls_per_run
        result = runs.run(after=every)
    return result


def test_a_quota_spent_before_its_reset_warns_with_both_times(server, session):
    provider = Provider(server, X_RateLimit_Reset=int(START) + 5 * 3600)  # epoch seconds
    runs = Runs(entry(provider.url, reset_header="X-RateLimit-Reset"), session)
    first = runs.run()
    assert first.status == "ok" and first.details["eta_seconds"] is None
    assert first.details["reset_in_seconds"] == 5 * 3600
    result = spend(provider, runs, 500, 3)  # 500 calls every 10 minutes: 3000 an hour
    assert result.details["remaining"] == 8500
    assert result.details["eta_seconds"] == 10200  # 8500 at 3000 an hour: 2h50m
    assert result.details["reset_in_seconds"] == 5 * 3600 - 1800
    assert result.status == "warning"  # 85 % left: only the ETA warns
    assert result.message == ("85% of quota left (8500 of 10000), exhausted in ~2h50m (at 3000 calls/h over 30m), "
                              "before the reset in 4h30m")


def test_a_quota_that_lasts_until_its_reset_stays_ok(server, session):
    provider = Provider(server, X_RateLimit_Reset=3 * 3600)  # small: seconds from now
    runs = Runs(entry(provider.url, reset_header="X-RateLimit-Reset"), session)
    runs.run()
    result = spend(provider, runs, 100, 3)  # 600 an hour: 9700 left lasts 16 h
    assert result.status == "ok"
    assert result.details["reset_in_seconds"] == 3 * 3600  # the provider says "3 h from now" each time
    assert result.message.endswith("exhausted in ~16h10m (at 600 calls/h over 30m), after the reset in 3h")


def test_a_reset_time_in_the_past_is_ignored_and_said(server, session):
    provider = Provider(server, X_RateLimit_Reset=int(START) - 60)
    runs = Runs(entry(provider.url, reset_header="X-RateLimit-Reset"), session)
    runs.run()
    result = spend(provider, runs, 500, 3)
    assert result.status == "ok" and result.details["eta_seconds"] == 10200
    assert result.details["reset_in_seconds"] is None
    assert result.details["reset_note"] == "header X-RateLimit-Reset (reset) is 31m in the past, ignored"
    assert "before the reset" not in result.message and "exhausted in ~2h50m" in result.message


def test_a_reset_in_epoch_milliseconds_is_read_as_such(server, session):
    provider = Provider(server, X_RateLimit_Reset=int(START * 1000) + 3600 * 1000)
    runs = Runs(entry(provider.url, reset_header="X-RateLimit-Reset"), session)
    assert runs.run().details["reset_in_seconds"] == 3600


def test_reset_every_counts_periods_from_midnight_utc(server, session):
    provider = Provider(server)
    runs = Runs(entry(provider.url, reset_every=86400.0), session)
    runs.run()
    result = spend(provider, runs, 500, 3)  # at 08:30 UTC, the daily reset is 15h30m away
    assert result.details["reset_in_seconds"] == 15 * 3600 + 1800
    assert result.status == "warning" and result.message.endswith("before the reset in 15h30m")


def test_the_provider_resetting_the_quota_restarts_the_series(server, session):
    provider = Provider(server, X_RateLimit_Reset=int(START) + 5 * 3600)
    runs = Runs(entry(provider.url, reset_header="X-RateLimit-Reset"), session)
    runs.run()
    assert spend(provider, runs, 500, 3).status == "warning"
    provider.remaining = 10000
    after = runs.run(after=600)
    assert after.status == "ok" and after.details["eta_seconds"] is None
    assert after.details["eta_note"].startswith("series restarted: usage dropped; no trend yet")


def test_without_a_reset_the_eta_is_told_but_judges_nothing(server, session):
    provider = Provider(server)
    runs = Runs(entry(provider.url), session)
    runs.run()
    result = spend(provider, runs, 2000, 3)  # 4000 left at 12000 an hour
    assert result.status == "ok" and result.details["reset_in_seconds"] is None
    assert result.message.endswith("exhausted in ~20m (at 12000 calls/h over 30m)")


def test_the_etas_are_exported_only_when_known(server, session):
    provider = Provider(server, X_RateLimit_Reset=int(START) + 5 * 3600)
    runs = Runs(entry(provider.url, reset_header="X-RateLimit-Reset"), session)
    first = with_identity(runs.run(), "quota:etherscan", "quota", 1.0)
    text = generate_latest(metrics.build_registry("health", [first], 1.0, 0.1)).decode()
    assert "monitor_quota_exhaustion_eta_seconds{" not in text
    assert 'monitor_quota_reset_seconds{api="etherscan"} 18000.0\n' in text
    later = with_identity(spend(provider, runs, 500, 3), "quota:etherscan", "quota", 1.0)
    text = generate_latest(metrics.build_registry("health", [later], 1.0, 0.1)).decode()
    assert 'monitor_quota_exhaustion_eta_seconds{api="etherscan"} 10200.0\n' in text


@pytest.mark.parametrize("value, note", [("soon", "is not a number"), (None, "is missing from the answer")])
def test_an_unreadable_reset_header_costs_only_the_reset(server, session, value, note):
    provider = Provider(server, **({"X_RateLimit_Reset": value} if value else {}))
    result = Runs(entry(provider.url, reset_header="X-RateLimit-Reset"), session).run()
    assert result.status == "ok" and result.value == 100.0
    assert result.details["reset_in_seconds"] is None and result.details["reset_note"].endswith(note)
