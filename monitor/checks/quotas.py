"""Quota checks (kind `quota`): how much of a data provider's API quota is left.

`quota` asks the provider, reads `remaining` and `limit` from response headers or
JSON fields (or a fixed limit from the config), and judges the remaining percent,
lower being worse. When the answer does not say, the check is `unknown`, not
critical: the scraper may be fine. API keys come from the environment
("env:NAME") and never appear in a message or in details.
"""

import math
import os
import re
import time
from functools import partial

from monitor import eta, redact
from monitor.checks import MARGIN_SECONDS
from monitor.results import CRITICAL, UNKNOWN, WARNING, Result, is_number, worst
from monitor.runner import Check
from monitor.units import format_duration

_NUMBER = re.compile(r"\s*[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?\s*")


class QuotaUnknown(Exception):
    """The answer does not tell how much quota is left; the message says why."""


def quota(cfg: dict, session=None, environ=os.environ, trend=None) -> Result:
    """Given a `[[quotas]]` entry, return the remaining percent judged with `remaining_percent`.

    With a `trend` (carried state, `eta.Settings`, wall clock), the remaining value joins
    the quota's series and the result says when it runs out (`exhaustion`).

    HTTP 429 from the provider means the quota is spent: critical. Anything that
    prevents computing the percent is unknown, with the reason.
    """
    from monitor import http  # requests is loaded only when quotas are configured

    threshold = cfg["remaining_percent"]

    def unknown(message: str, **details) -> Result:
        return Result(UNKNOWN, message, unit="%", warning=threshold.warning,
                      critical=threshold.critical, details=details, lower_is_worse=threshold.lower_is_worse)

    try:
        headers = request_headers(cfg.get("headers") or {}, environ)
    except QuotaUnknown as exc:
        return unknown(str(exc))
    try:
        resp = http.get(session, cfg["url"], cfg["timeout"], headers=headers, tls=http.tls_settings(cfg))
    except http.ProbeError as exc:
        return unknown(f"quota provider: {exc.reason}")

    if resp.status == 429:
        details = {"http_status": 429, "remaining": 0, "percent": 0.0}
        retry = resp.headers.get("Retry-After", "")
        if retry.strip().isdigit():  # only a number of seconds is shown, nothing free-form
            details["retry_after_seconds"] = int(retry)
        return Result(CRITICAL, "quota exhausted: HTTP 429 (too many requests) from provider",
                      value=0.0, unit="%", warning=threshold.warning, critical=threshold.critical,
                      details=details, lower_is_worse=threshold.lower_is_worse)
    if not 200 <= resp.status < 300:
        hint = " (is the API key right?)" if resp.status in (401, 403) else ""
        return unknown(f"HTTP {resp.status} from provider{hint}", http_status=resp.status)

    try:
        remaining = read_number(resp, "remaining", cfg.get("remaining_header"), cfg.get("remaining_json"))
        if cfg.get("limit_header") or cfg.get("limit_json"):
            limit = read_number(resp, "limit", cfg.get("limit_header"), cfg.get("limit_json"))
        elif cfg.get("limit") is not None:
            limit = cfg["limit"]
        else:
            raise QuotaUnknown("no limit configured (limit_header, limit_json or limit)")
    except QuotaUnknown as exc:
        return unknown(str(exc))
    if limit == 0:
        return unknown("limit is 0", remaining=remaining, limit=limit)
    if limit < 0:
        return unknown(f"limit is negative ({_plain(limit)})", remaining=remaining, limit=limit)

    exact = 100.0 * remaining / limit
    if not math.isfinite(exact):  # 1e308 of 1e-300: no percent a person or a parser can use
        return unknown(f"remaining percent is not a finite number ({remaining:g} of {limit:g})",
                       remaining=remaining, limit=limit)
    percent = round(exact, 2)
    # Judged unrounded: 2001 of 10000 is above a 20% warning, though it prints as 20.01.
    result = Result(threshold.judge(exact), f"{percent:g}% of quota left ({_plain(remaining)} of {_plain(limit)})",
                    value=percent, unit="%", warning=threshold.warning, critical=threshold.critical,
                    details={"remaining": remaining, "limit": limit, "percent": percent},
                    lower_is_worse=threshold.lower_is_worse)
    if trend is None or remaining < 0:
        return result
    return exhaustion(result, trend, resp.headers, cfg, remaining, limit)


def exhaustion(result: Result, trend, headers, cfg: dict, remaining: float, limit: float) -> Result:
    """The result with when the quota runs out at its recent rate and, when known, when it resets.

    The series is of calls used (limit - remaining): a reset is a drop, which restarts it
    (monitor/eta.py). Warning when the ETA comes before the reset; with no reset known the
    ETA is reported and judged by nothing. Adds `details.eta_seconds`, `eta_note` and
    `reset_in_seconds` (null when unknown).
    """
    carried, settings, clock = trend
    now = clock()
    key = f"eta:quota:{cfg['name']}"
    points, restarted = eta.append(eta.points_of(carried.previous.get(key)), round(now, 1), limit - remaining, limit)
    carried.save(key, points)
    found = eta.estimate(points, now, settings, lambda rate: f"{_plain(round(rate * 3600, 1))} calls/h",
                         "exhausted")
    reset_in, reset_note = reset_time(headers, cfg, now)
    note = f"series restarted: {restarted}; {found.note}" if restarted else found.note
    details = {**result.details, "eta_seconds": None if found.seconds is None else round(found.seconds),
               "eta_note": note, "reset_in_seconds": None if reset_in is None else round(reset_in)}
    if reset_note:
        details["reset_note"] = reset_note
    if found.seconds is None:
        return result.replace(details=details)
    message = f"{result.message}, {eta.told(found, 'exhausted')}"
    status = result.status
    if reset_in is not None:
        first = found.seconds < reset_in
        message += f", {'before' if first else 'after'} the reset in {format_duration(reset_in)}"
        if first:
            status = worst(status, WARNING)
    return result.replace(status=status, message=message, details=details)


# A reset header at least this big is a time since the epoch (2001-09-09 on), not seconds from now;
# at least RESET_MILLIS, milliseconds since the epoch.
RESET_EPOCH = 1e9
RESET_MILLIS = 1e12


def reset_time(headers, cfg: dict, now: float) -> tuple[float | None, str]:
    """Seconds until the quota resets, from `reset_header` else `reset_every`, and why it is unknown.

    A header value is epoch seconds (>= 1e9), epoch milliseconds (>= 1e12) or seconds from
    now; one in the past or not a number is ignored (the note says so). `reset_every` counts
    periods from 00:00 UTC.
    """
    header, note = cfg.get("reset_header"), ""
    if header:
        raw = headers.get(header)
        number = _number(raw) if raw is not None else None
        if raw is None:
            note = f"header {header} (reset) is missing from the answer"
        elif number is None:
            note = f"header {header} (reset) is not a number"
        else:
            at = number / 1000 if number >= RESET_MILLIS else number if number >= RESET_EPOCH else now + number
            if at > now:
                return at - now, ""
            note = f"header {header} (reset) is {format_duration(now - at)} in the past, ignored"
    period = cfg.get("reset_every")
    if period:
        return period - now % period, note
    return None, note


def request_headers(configured: dict, environ) -> dict:
    """Resolve "env:NAME" header values from `environ`. Raise QuotaUnknown naming a missing one."""
    headers = {}
    for name, value in configured.items():
        if value.startswith("env:"):
            variable = value[len("env:"):]
            if variable not in environ:
                raise QuotaUnknown(f"environment variable {variable} is not set (for header {name})")
            if not environ[variable]:
                raise QuotaUnknown(f"environment variable {variable} is empty (for header {name})")
            value = environ[variable]
            redact.register(value)  # an API key: masked wherever it might surface
        headers[name] = value
    return headers


def read_number(resp, what: str, header: str | None, json_path: str | None) -> float:
    """Return the number the provider gave for `what`, from a header or else a JSON field.

    Raise QuotaUnknown if it is absent or not a number; the value itself is never
    quoted, as a provider may echo the key back.
    """
    if header:
        raw = resp.headers.get(header)
        if raw is None:
            raise QuotaUnknown(f"header {header} ({what}) is missing from the answer")
        number = _number(raw)
        if number is None:
            raise QuotaUnknown(f"header {header} ({what}) is not a number")
        return number

    from monitor.http import json_field

    if resp.truncated:
        raise QuotaUnknown(f"answer is over {len(resp.body):,} bytes, {json_path} ({what}) not read")
    try:
        body = resp.json()
    except ValueError:
        raise QuotaUnknown(f"answer is not JSON, cannot read {json_path} ({what})") from None
    try:
        found = json_field(body, json_path)
    except KeyError:
        raise QuotaUnknown(f"{json_path} ({what}) is missing from the answer") from None
    number = _number(found)
    if number is None:
        raise QuotaUnknown(f"{json_path} ({what}) is not a number")
    return number


def _number(value) -> float | int | None:
    """A finite number from a JSON number or a numeric string (some APIs quote them)."""
    if isinstance(value, (int, float)):
        return value if is_number(value) else None
    if isinstance(value, str) and _NUMBER.fullmatch(value):
        number = float(value)
        if not math.isfinite(number):
            return None
        return int(number) if number.is_integer() else number
    return None


def _plain(number) -> str:
    return f"{number:g}" if isinstance(number, float) and not number.is_integer() else f"{int(number)}"


# --- what these checks export (the contract: monitor/checks/__init__.py) ----------------------

METRICS = {
    "monitor_api_quota_remaining_ratio": ("Remaining fraction of the provider's API quota.", ("api",)),
    "monitor_quota_exhaustion_eta_seconds": ("Seconds until the API quota is spent at the rate of "
                                             "system.eta_window (only while it is being used).", ("api",)),
    "monitor_quota_reset_seconds": ("Seconds until the provider resets the API quota (reset_header or "
                                    "reset_every; only when known).", ("api",)),
}
MEASURES = {"quota": ("remaining", True)}


def checks(config: dict, carried=None, shared=None) -> list:
    """One check per [[quotas]] entry; its requests share the run's HTTP session."""
    session = shared.http_session() if shared else None
    trend = (carried, eta.settings_of(config), time.time) if carried is not None else None
    if carried is not None:  # as disks.path_checks does, for a run with `--only quota`
        eta.drop_stale(carried.previous, time.time())
    return [Check(f"quota:{cfg['name']}", "quota", partial(quota, cfg, session, trend=trend),
                  cfg["timeout"] + MARGIN_SECONDS)
            for cfg in config["quotas"]]


def check_ids(config: dict) -> list[str]:
    return [f"quota:{q['name']}" for q in config["quotas"]]


def samples(result) -> list:
    if not isinstance(result.value, (int, float)) or isinstance(result.value, bool):
        return []
    api, details = {"api": result.id.split(":", 1)[1]}, result.details or {}
    return [("monitor_api_quota_remaining_ratio", api, result.value / 100),
            ("monitor_quota_exhaustion_eta_seconds", api, details.get("eta_seconds")),
            ("monitor_quota_reset_seconds", api, details.get("reset_in_seconds"))]


def levels(config: dict) -> dict:
    from monitor.fleet.kit import per_name, schema_default

    quotas, remaining = config["quotas"], schema_default("quotas", "remaining_percent")
    # Ratios: the unit of the Prometheus metric, not of the config.
    return {"quota_warning": per_name(quotas, "remaining_percent", "api", remaining, lambda t: t.warning / 100),
            "quota_critical": per_name(quotas, "remaining_percent", "api", remaining, lambda t: t.critical / 100)}


def rules(t: dict) -> dict:
    from monitor.fleet.kit import compare, health_runbook, level_text, percent, rule

    return {"monitor_services": [rule(
        "ApiQuotaLow", compare("monitor_api_quota_remaining_ratio", "<=", t[key]), "5m", severity,
        f"API quota of {{{{ $labels.api }}}} running out ({severity})",
        "{{ $value | humanizePercentage }} of the {{ $labels.api }} API quota is left for "
        f"{{{{ $labels.instance }}}} ({severity} from {level_text(t[key], lambda r: percent(r * 100))}).",
        health_runbook("quota")) for severity, key in (("warning", "quota_warning"), ("critical", "quota_critical"))]
        + [rule("ApiQuotaExhaustedBeforeReset",
                "monitor_quota_exhaustion_eta_seconds < monitor_quota_reset_seconds", "10m", "warning",
                "API quota of {{ $labels.api }} runs out before its reset (warning)",
                "At its recent rate the {{ $labels.api }} API quota of {{ $labels.instance }} is spent in "
                "{{ $value | humanizeDuration }}, before the provider resets it (reset_header or reset_every).",
                health_runbook("quota"))]}


def panels(t: dict) -> list:
    from monitor.fleet.kit import INSTANCE as I, Levels, lower_worse, panel, target

    quota = Levels(t["quota_warning"].default, t["quota_critical"].default)
    return [("Security", panel("bargauge", "API quota remaining",
                               [target(f"monitor_api_quota_remaining_ratio{{{I}}}", "{{instance}} {{api}}")],
                               "Remaining share of each provider's quota (quotas remaining_percent).", "percentunit",
                               lower_worse(quota), 0, 1,
                               options={"displayMode": "basic", "orientation": "horizontal",
                                        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}}),
             8, 8),
            ("Ahead", panel("timeseries", "API quota spent in",
                            [target(f"monitor_quota_exhaustion_eta_seconds{{{I}}}", "{{instance}} {{api}} spent in"),
                             target(f"monitor_quota_reset_seconds{{{I}}}", "{{instance}} {{api}} resets in", "B")],
                            "Time until each API quota is spent at the rate of system.eta_window, and until its "
                            "reset (reset_header or reset_every): spent before the reset warns.", "s",
                            minimum=0), 12, 8)]
