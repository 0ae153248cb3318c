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
from functools import partial

from monitor import redact
from monitor.checks import MARGIN_SECONDS
from monitor.results import CRITICAL, UNKNOWN, Result, is_number
from monitor.runner import Check

_NUMBER = re.compile(r"\s*[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?\s*")


class QuotaUnknown(Exception):
    """The answer does not tell how much quota is left; the message says why."""


def quota(cfg: dict, session=None, environ=os.environ) -> Result:
    """Given a `[[quotas]]` entry, return the remaining percent judged with `remaining_percent`.

    HTTP 429 from the provider means the quota is spent: critical. Anything that
    prevents computing the percent is unknown, with the reason.
    """
    from monitor import http  # requests is loaded only when quotas are configured

    threshold = cfg["remaining_percent"]

    def unknown(message: str, **details) -> Result:
        return Result(UNKNOWN, message, unit="%", warning=threshold.warning,
                      critical=threshold.critical, details=details)

    try:
        headers = request_headers(cfg.get("headers") or {}, environ)
    except QuotaUnknown as exc:
        return unknown(str(exc))
    try:
        resp = http.get(session, cfg["url"], cfg["timeout"], headers=headers)
    except http.ProbeError as exc:
        return unknown(f"quota provider: {exc.reason}")

    if resp.status == 429:
        details = {"http_status": 429, "remaining": 0, "percent": 0.0}
        retry = resp.headers.get("Retry-After", "")
        if retry.strip().isdigit():  # only a number of seconds is shown, nothing free-form
            details["retry_after_seconds"] = int(retry)
        return Result(CRITICAL, "quota exhausted: HTTP 429 (too many requests) from provider",
                      value=0.0, unit="%", warning=threshold.warning, critical=threshold.critical,
                      details=details)
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
    return Result(threshold.judge(exact), f"{percent:g}% of quota left ({_plain(remaining)} of {_plain(limit)})",
                  value=percent, unit="%", warning=threshold.warning, critical=threshold.critical,
                  details={"remaining": remaining, "limit": limit, "percent": percent})


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

METRICS = {"monitor_api_quota_remaining_ratio": ("Remaining fraction of the provider's API quota.", ("api",))}
MEASURES = {"quota": ("remaining", True)}


def checks(config: dict, carried=None, shared=None) -> list:
    """One check per [[quotas]] entry; its requests share the run's HTTP session."""
    session = shared.http_session() if shared else None
    return [Check(f"quota:{cfg['name']}", "quota", partial(quota, cfg, session), cfg["timeout"] + MARGIN_SECONDS)
            for cfg in config["quotas"]]


def check_ids(config: dict) -> list[str]:
    return [f"quota:{q['name']}" for q in config["quotas"]]


def samples(result) -> list:
    if not isinstance(result.value, (int, float)) or isinstance(result.value, bool):
        return []
    return [("monitor_api_quota_remaining_ratio", {"api": result.id.split(":", 1)[1]}, result.value / 100)]


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
        health_runbook("quota")) for severity, key in (("warning", "quota_warning"), ("critical", "quota_critical"))]}


def panels(t: dict) -> list:
    from monitor.fleet.kit import INSTANCE as I, Levels, lower_worse, panel, target

    quota = Levels(t["quota_warning"].default, t["quota_critical"].default)
    return [("Security", panel("bargauge", "API quota remaining",
                               [target(f"monitor_api_quota_remaining_ratio{{{I}}}", "{{instance}} {{api}}")],
                               "Remaining share of each provider's quota (quotas remaining_percent).", "percentunit",
                               lower_worse(quota), 0, 1,
                               options={"displayMode": "basic", "orientation": "horizontal",
                                        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}}),
             8, 8)]
