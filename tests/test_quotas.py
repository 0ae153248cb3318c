"""Quota checks against a real loopback provider; API keys never leak into results."""

import json

import pytest

from monitor.checks.quotas import quota
from monitor.results import CRITICAL, OK, UNKNOWN, WARNING, Threshold
from tests.conftest import monitor_json
from tests.loopback import closed_port, reply, server, session  # noqa: F401 (fixtures)

SECRET = "sk-live-8f1e2d3c4b5a"




def config(**entry):
    """A `[[quotas]]` entry as the config loader returns it."""
    base = {"name": "etherscan", "url": None, "headers": {}, "remaining_header": None,
            "remaining_json": None, "limit_header": None, "limit_json": None, "limit": None,
            "remaining_percent": Threshold(20, 5, lower_is_worse=True), "timeout": 2.0}
    return {**base, **entry}


def by_headers(url, **entry):
    return config(url=url, remaining_header="X-RateLimit-Remaining", limit_header="X-RateLimit-Limit", **entry)


def rate_headers(remaining, limit="10000"):
    return {"X-RateLimit-Remaining": remaining, "X-RateLimit-Limit": limit}


def assert_secret_free(result):
    assert SECRET not in json.dumps(result.to_json(), default=str)


def test_remaining_and_limit_from_headers(server, session):
    url = server.route("/quota", reply(headers=rate_headers("4200")))
    result = quota(by_headers(url), session, environ={})
    assert result.status == OK
    assert (result.value, result.unit) == (42.0, "%")
    assert (result.warning, result.critical) == (20, 5)
    assert result.details == {"remaining": 4200, "limit": 10000, "percent": 42.0}
    assert result.message == "42% of quota left (4200 of 10000)"


def test_header_names_are_matched_whatever_their_case(server, session):
    url = server.route("/quota", reply(headers={"x-ratelimit-remaining": "4200", "X-RATELIMIT-LIMIT": "10000"}))
    assert quota(by_headers(url), session, environ={}).value == 42.0


def test_remaining_and_limit_from_json_fields(server, session):
    url = server.route("/quota", reply(json={"data": {"remaining": 50, "limit": 1000}}))
    result = quota(config(url=url, remaining_json="data.remaining", limit_json="data.limit"), session, environ={})
    assert result.status == CRITICAL
    assert result.value == 5.0
    assert result.details == {"remaining": 50, "limit": 1000, "percent": 5.0}


def test_numbers_quoted_as_strings_in_json_are_read(server, session):
    url = server.route("/quota", reply(json={"result": {"left": "750", "max": "1000"}}))
    result = quota(config(url=url, remaining_json="result.left", limit_json="result.max"), session, environ={})
    assert result.value == 75.0


def test_fixed_limit_from_the_config(server, session):
    url = server.route("/quota", reply(headers={"X-RateLimit-Remaining": "150"}))
    result = quota(config(url=url, remaining_header="X-RateLimit-Remaining", limit=1000), session, environ={})
    assert result.status == WARNING
    assert result.details == {"remaining": 150, "limit": 1000, "percent": 15.0}


@pytest.mark.parametrize("remaining, status", [
    ("2001", OK), ("2000", WARNING), ("501", WARNING), ("500", CRITICAL), ("0", CRITICAL),
    ("10000", OK), ("-3", CRITICAL),
])
def test_20_and_5_percent_thresholds(server, session, remaining, status):
    url = server.route("/quota", reply(headers=rate_headers(remaining)))
    assert quota(by_headers(url), session, environ={}).status == status


def test_429_from_the_provider_means_exhausted(server, session):
    url = server.route("/quota", reply(429, headers={"Retry-After": "30"}, body="slow down"))
    result = quota(by_headers(url), session, environ={})
    assert result.status == CRITICAL
    assert "429" in result.message and "exhausted" in result.message
    assert result.value == 0.0
    assert result.details["retry_after_seconds"] == 30


def test_missing_header_is_unknown_naming_it(server, session):
    url = server.route("/quota", reply(headers={"X-RateLimit-Limit": "10000"}))
    result = quota(by_headers(url), session, environ={})
    assert result.status == UNKNOWN
    assert result.message == "header X-RateLimit-Remaining (remaining) is missing from the answer"


def test_non_numeric_header_is_unknown_without_quoting_it(server, session):
    url = server.route("/quota", reply(headers=rate_headers(f"key={SECRET}")))
    result = quota(by_headers(url), session, environ={})
    assert result.status == UNKNOWN
    assert result.message == "header X-RateLimit-Remaining (remaining) is not a number"
    assert_secret_free(result)


@pytest.mark.parametrize("body, message", [
    ({"data": {"limit": 10}}, "data.remaining (remaining) is missing from the answer"),
    ({"data": {"remaining": "lots", "limit": 10}}, "data.remaining (remaining) is not a number"),
    ({"data": {"remaining": True, "limit": 10}}, "data.remaining (remaining) is not a number"),
    ({"data": {"remaining": 3, "limit": None}}, "data.limit (limit) is not a number"),
])
def test_absent_or_non_numeric_json_field_is_unknown(server, session, body, message):
    url = server.route("/quota", reply(json=body))
    result = quota(config(url=url, remaining_json="data.remaining", limit_json="data.limit"), session, environ={})
    assert (result.status, result.message) == (UNKNOWN, message)


def test_answer_that_is_not_json_is_unknown(server, session):
    url = server.route("/quota", reply(body="<html>maintenance</html>"))
    result = quota(config(url=url, remaining_json="data.remaining", limit=10), session, environ={})
    assert result.status == UNKNOWN
    assert result.message == "answer is not JSON, cannot read data.remaining (remaining)"


def test_limit_0_is_unknown(server, session):
    url = server.route("/quota", reply(headers=rate_headers("0", "0")))
    result = quota(by_headers(url), session, environ={})
    assert (result.status, result.message) == (UNKNOWN, "limit is 0")


def test_server_error_is_unknown(server, session):
    url = server.route("/quota", reply(500, body="oops"))
    result = quota(by_headers(url), session, environ={})
    assert (result.status, result.message) == (UNKNOWN, "HTTP 500 from provider")


def test_unreachable_provider_is_unknown(session):
    result = quota(by_headers(f"http://127.0.0.1:{closed_port()}/quota"), session, environ={})
    assert (result.status, result.message) == (UNKNOWN, "quota provider: connection refused")


def test_env_header_is_sent_and_never_shown(server, session):
    url = server.route("/quota", reply(401, body=f"bad key {SECRET}"))
    cfg = by_headers(url, headers={"X-Api-Key": "env:ETHERSCAN_API_KEY", "Accept": "application/json"})
    result = quota(cfg, session, environ={"ETHERSCAN_API_KEY": SECRET})
    path, headers = server.received[0]
    assert headers["X-Api-Key"] == SECRET
    assert headers["Accept"] == "application/json"
    assert result.status == UNKNOWN
    assert result.message == "HTTP 401 from provider (is the API key right?)"
    assert_secret_free(result)


def test_env_header_with_a_healthy_answer_keeps_the_key_out_of_the_result(server, session):
    url = server.route("/quota", reply(headers=rate_headers("9000")))
    cfg = by_headers(url, headers={"X-Api-Key": "env:ETHERSCAN_API_KEY"})
    result = quota(cfg, session, environ={"ETHERSCAN_API_KEY": SECRET})
    assert result.status == OK
    assert server.received[0][1]["X-Api-Key"] == SECRET
    assert_secret_free(result)


def test_missing_env_variable_is_unknown_naming_it_and_nothing_is_sent(server, session):
    url = server.route("/quota", reply(headers=rate_headers("9000")))
    cfg = by_headers(url, headers={"X-Other": "env:OTHER_KEY", "X-Api-Key": "env:ETHERSCAN_API_KEY"})
    result = quota(cfg, session, environ={"OTHER_KEY": SECRET})
    assert result.status == UNKNOWN
    assert result.message == "environment variable ETHERSCAN_API_KEY is not set (for header X-Api-Key)"
    assert_secret_free(result)
    assert server.received == []


def test_empty_env_variable_is_unknown(server, session):
    url = server.route("/quota", reply(headers=rate_headers("9000")))
    cfg = by_headers(url, headers={"X-Api-Key": "env:ETHERSCAN_API_KEY"})
    result = quota(cfg, session, environ={"ETHERSCAN_API_KEY": ""})
    assert (result.status, result.message) == (
        UNKNOWN, "environment variable ETHERSCAN_API_KEY is empty (for header X-Api-Key)")


def test_key_with_a_line_break_is_refused_without_showing_it(server, session):
    url = server.route("/quota", reply(headers=rate_headers("9000")))
    cfg = by_headers(url, headers={"X-Api-Key": "env:ETHERSCAN_API_KEY"})
    result = quota(cfg, session, environ={"ETHERSCAN_API_KEY": SECRET + "\n"})
    assert result.status == UNKNOWN
    assert result.message == "quota provider: invalid request header value (a line break or control character?)"
    assert_secret_free(result)


def test_ietf_ratelimit_headers_beside_legacy_ones(server, session):
    # A provider sending the IETF draft's `RateLimit-Remaining` and an `X-` duplicate
    # with a list value.
    url = server.route("/v1/quota", reply(headers={
        "RateLimit-Remaining": "120", "RateLimit-Limit": "1000", "X-RateLimit-Remaining": "120, 5"}))
    result = quota(config(url=url, remaining_header="RateLimit-Remaining", limit_header="RateLimit-Limit"),
                   session, environ={})
    legacy = quota(config(url=url, remaining_header="X-RateLimit-Remaining", limit_header="RateLimit-Limit"),
                   session, environ={})
    assert (result.status, result.value) == (WARNING, 12.0)
    assert (legacy.status, legacy.message) == (UNKNOWN, "header X-RateLimit-Remaining (remaining) is not a number")


# --- strict JSON: no Infinity or NaN anywhere (issue 12, item 11) ---------------------

def refuse_constant(name):
    raise AssertionError(f"{name} in stdout: not JSON")


@pytest.mark.parametrize("remaining, limit", [("1e308", "1e-300"), ("-1e308", "1e-300")])
def test_an_overflowing_quota_is_unknown_and_strict_json_everywhere(tmp_path, run_monitor, server,
                                                                     remaining, limit):
    url = server.route("/quota", reply(headers=rate_headers(remaining, limit)))
    toml = (f'[[quotas]]\nname = "etherscan"\nurl = "{url}"\n'
            'remaining_header = "X-RateLimit-Remaining"\nlimit_header = "X-RateLimit-Limit"\n')
    prom = tmp_path / "prom"
    prom.mkdir()
    proc = run_monitor(["health", "--only", "quota", "--textfile-dir", str(prom)], tmp_path, config=toml)
    out = monitor_json(proc.stdout, parse_constant=refuse_constant)
    check = out["checks"]["quota:etherscan"]
    assert check["status"] == "unknown" and check["value"] is None
    assert check["message"].startswith("remaining percent is not a finite number")
    assert proc.returncode == 3
    text = "".join(p.read_text() for p in prom.iterdir())
    assert "monitor_check_status" in text
    assert "Inf" not in text and "NaN" not in text and "quota_remaining_ratio" not in text
    for line in (tmp_path / "logs").glob("*"):  # the log is strict JSON too
        for record in line.read_text().splitlines():
            json.loads(record, parse_constant=refuse_constant)
