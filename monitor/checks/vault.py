"""Vault checks (kind `vault`): measure /sys/health and the token's remaining TTL, then judge them.

`health` is the `vault` check (reachable, initialized, unsealed, role, version,
latency); `token` is the `vault-token` check (remaining TTL, lower is worse). Both
return a Result for every expected failure (unreachable, sealed, revoked) instead of
raising, and neither puts the token anywhere in the Result.
"""

import logging
import math
import os
import time
from functools import partial

from monitor.checks import MARGIN_SECONDS
from monitor.results import CRITICAL, OK, UNKNOWN, WARNING, Result, Threshold, measured
from monitor.runner import Check
from monitor.units import format_duration
from monitor.vault_secrets import (RedirectRefused, ca_cert_problem, describe_failure, network_errors, open_client,
                                   record_failure, redact, shown_url, timeout_of, url_problem, vault_errors,
                                   vault_url)

DEFAULT_LATENCY_MS = Threshold(500, 2000)
DEFAULT_TOKEN_TTL = Threshold(7 * 86400, 86400, lower_is_worse=True)

# /v1/sys/health answers with its status code: (verdict, role, what the operator reads).
HEALTH_CODES = {
    200: (OK, "active", "active"),
    429: (OK, "standby", "standby"),
    473: (OK, "performance standby", "performance standby"),
    472: (WARNING, "dr secondary", "DR secondary: it does not serve requests"),
    474: (CRITICAL, "standby", "standby that cannot reach the active node"),
    501: (CRITICAL, "uninitialized", "not initialized (bao operator init)"),
    503: (CRITICAL, "sealed", "sealed: secrets cannot be read until it is unsealed (bao operator unseal)"),
    530: (CRITICAL, "removed", "removed from its cluster"),
}


def _environ(environ):
    return os.environ if environ is None else environ


def _body(response) -> dict | None:
    """hvac hands back a dict for a JSON 200 and the requests Response for anything else."""
    if isinstance(response, dict):
        return response
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _setup_problem(cfg: dict, url: str, url_from: str) -> tuple[str, str] | None:
    """(status, message) when the URL or the CA bundle makes asking Vault pointless."""
    problem = url_problem(url)
    if problem:
        return CRITICAL, f'invalid Vault URL "{shown_url(url)}" (from {url_from}): {problem}'
    problem = ca_cert_problem(cfg)
    return (UNKNOWN, problem) if problem else None


def _health_verdict(code: int, body: dict | None, url: str) -> tuple[str, str, str | None]:
    """Return (status, summary, role) for one /sys/health answer."""
    if body is None or "sealed" not in body or "initialized" not in body:
        what = "non-JSON" if body is None else "non-Vault JSON"
        return CRITICAL, (f"unreachable: HTTP {code} with a {what} answer at {shown_url(url)} "
                          "(a proxy or another service there?)"), None
    if code not in HEALTH_CODES:
        errors = ", ".join(map(str, body.get("errors") or [])) or "no details"
        return CRITICAL, f"unexpected HTTP {code} from /v1/sys/health: {errors}"[:300], None
    status, role, summary = HEALTH_CODES[code]
    version = body.get("version")
    return status, f"Vault {version} {summary}" if version else f"Vault {summary}", role


def health(cfg: dict, token_note: str | None = None, *, environ=None, clock=time.perf_counter,
           certificates=None) -> Result:
    """Given the `vault` config, return the `vault` check's Result.

    GET /v1/sys/health; the status code says active/standby/sealed/...; the latency
    in ms is the value, judged with `vault.latency_ms`; the worse verdict wins.
    `$VAULT_ADDR` wins over `vault.url`. `token_note` (why the token check is
    skipped, say) is passed on in details["token"]. `certificates`: where the TLS
    certificate Vault shows is recorded (`peer_certs.PeerCertificates`).
    """
    entered = clock()  # vault.timeout bounds the whole check, importing hvac included
    url, url_from = vault_url(cfg, _environ(environ))
    threshold = cfg.get("latency_ms") or DEFAULT_LATENCY_MS
    details: dict = {"url": shown_url(url), "url_from": url_from}
    if token_note:
        details["token"] = token_note

    def failed(status: str, message: str) -> Result:
        return Result(status, message, unit="ms", warning=threshold.warning,
                      critical=threshold.critical, details=details)

    problem = _setup_problem(cfg, url, url_from)
    if problem:
        return failed(*problem)
    from hvac import exceptions as hv

    left = max(0.2, timeout_of(cfg) - (clock() - entered))
    client = open_client(cfg, "", url, seconds=left, certificates=certificates)
    started = clock()
    try:
        # GET, not hvac's default HEAD: HEAD has no body to tell the version and role.
        # hvac asks with raise_exception=False, so every code comes back as an answer;
        # the VaultError branch is for hvac versions that change their mind.
        answer = client.sys.read_health_status(method="GET")
    except RedirectRefused as exc:
        return failed(CRITICAL, str(exc))
    except network_errors() as exc:
        record_failure(certificates, url, exc, timeout_of(cfg) - (clock() - entered))
        return failed(CRITICAL, f"unreachable: {describe_failure(exc, url, timeout_of(cfg))} "
                                f"({shown_url(url)})")
    except hv.VaultError as exc:
        return failed(CRITICAL, f"Vault answered {type(exc).__name__}: {vault_errors(exc) or 'no details'}")
    latency = round((clock() - started) * 1000, 1)
    code = 200 if isinstance(answer, dict) else answer.status_code
    body = _body(answer)
    status, summary, role = _health_verdict(code, body, url)
    details.update(http_status=code, latency_ms=latency)
    if role is None:
        return failed(status, summary)
    details.update(role=role, initialized=body.get("initialized"), sealed=body.get("sealed"),
                   standby=body.get("standby"), version=body.get("version"),
                   cluster_name=body.get("cluster_name"))
    slow = threshold.judge(latency)
    if slow != OK:
        level = threshold.critical if slow == CRITICAL else threshold.warning
        message = f"{summary}; slow: {latency:g} ms (≥ {level:g} ms)"
    else:
        message = f"{summary}; {latency:g} ms"
    return measured(latency, threshold, message, unit="ms", details=details, worst_of=status)


def _scrubbed(value, token: str):
    if isinstance(value, str):
        return redact(value, token)
    if isinstance(value, dict):
        return {k: _scrubbed(v, token) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrubbed(v, token) for v in value]
    return value


def token(cfg: dict, token: str, *, environ=None) -> Result:
    """Given the `vault` config and a token, return the `vault-token` check's Result.

    `auth/token/lookup-self` gives the remaining TTL in seconds, judged with
    `vault.token_ttl` (lower is worse). A token without expiry (root) is ok.
    """
    result = _token_result(cfg, token, _environ(environ))
    # lookup-self's `id` IS the token; it is never copied, and this is the seat belt.
    return result.replace(message=redact(result.message, token), details=_scrubbed(result.details, token))


def _token_result(cfg: dict, secret: str, environ) -> Result:
    from hvac import exceptions as hv

    url, url_from = vault_url(cfg, environ)
    threshold = cfg.get("token_ttl") or DEFAULT_TOKEN_TTL
    details: dict = {"url": shown_url(url), "url_from": url_from}

    def failed(status: str, message: str) -> Result:
        return Result(status, message, unit="s", warning=threshold.warning,
                      critical=threshold.critical, details=details, lower_is_worse=threshold.lower_is_worse)

    if not secret:
        return failed(UNKNOWN, "no token to check")
    problem = _setup_problem(cfg, url, url_from)
    if problem:
        return failed(*problem)
    client = open_client(cfg, secret, url)
    try:
        answer = client.auth.token.lookup_self()
    except RedirectRefused as exc:
        return failed(CRITICAL, f"cannot look up the token: {exc}")
    except hv.Forbidden:
        # Vault answers 403, not 401, for a revoked, expired or unknown token.
        return failed(CRITICAL, "token revoked or lacks permission to look itself up (HTTP 403)")
    except hv.VaultDown:
        return failed(CRITICAL, "cannot look up the token: Vault is sealed")
    except hv.VaultError as exc:
        return failed(UNKNOWN, f"cannot look up the token: {type(exc).__name__}: "
                               f"{vault_errors(exc) or 'no details'}")
    except network_errors() as exc:
        return failed(CRITICAL, f"unreachable: {describe_failure(exc, url, timeout_of(cfg))} "
                                f"({shown_url(url)})")
    data = answer.get("data") if isinstance(answer, dict) else None
    if not isinstance(data, dict) or not isinstance(data.get("ttl"), (int, float)):
        code = "200" if isinstance(answer, dict) else str(answer.status_code)
        return failed(UNKNOWN, f"cannot look up the token: unexpected answer (HTTP {code})")

    ttl, renewable = int(data["ttl"]), bool(data.get("renewable"))
    details.update(accessor=data.get("accessor"), policies=data.get("policies"), renewable=renewable,
                   expire_time=data.get("expire_time"), ttl_seconds=ttl, type=data.get("type"))
    if ttl == 0 and not data.get("expire_time"):
        details["ttl_seconds"] = None
        return failed(OK, "token never expires (no TTL, like a root token)")

    message = f"token expires in {format_duration(ttl)}" if ttl > 0 else "token has expired"
    verdict = threshold.judge(ttl)
    if verdict != OK:
        message += (" and is renewable: renew it (bao token renew) or issue a new one" if renewable
                    else " and is not renewable: issue a new one before then")
    return measured(ttl, threshold, message, unit="s", details=details)


# --- what these checks export (the contract: monitor/checks/__init__.py) ----------------------

METRICS = {
    "monitor_vault_up": ("1 if Vault answered its health endpoint.", ()),
    "monitor_vault_sealed": ("1 if Vault is sealed.", ()),
    "monitor_vault_token_ttl_seconds": ("Remaining TTL of monitor's Vault token (+Inf: never expires).", ()),
}
# A token that never expires (root) has no TTL: +Inf keeps "ttl < X" alerts quiet.
INFINITE_OK = ("monitor_vault_token_ttl_seconds",)
MEASURES = {"vault": ("latency", False), "vault-token": ("TTL", True)}


def checks(config: dict, carried=None, shared=None) -> list:
    """`vault` (health, seal) and, with a token, `vault-token` (its TTL)."""
    from monitor import redact as redaction  # `redact` here is vault_secrets' function
    from monitor.vault_secrets import read_token

    cfg = config["vault"]
    secret, warnings = read_token(cfg)
    for warning in warnings:
        logging.getLogger("monitor").warning("vault: %s", warning, extra={"event": "vault_token"})
    redaction.register(secret)
    timeout = cfg["timeout"] + MARGIN_SECONDS
    note = None if secret else "no token: vault-token check skipped"
    https = shared is not None and vault_url(cfg)[0].lower().startswith("https:")
    certificates = shared.peer_certificates() if https else None  # for the tls check
    found = [Check("vault", "vault", partial(health, cfg, note, certificates=certificates), timeout,
                   on_timeout=CRITICAL)]
    if secret:
        found.append(Check("vault-token", "vault", partial(token, cfg, secret), timeout, on_timeout=CRITICAL))
    return found


def check_ids(config: dict) -> list[str]:
    return ["vault", "vault-token"] if config.get("vault") else []


def samples(result) -> list:
    details = result.details or {}
    if result.id == "vault":
        if "sealed" not in details:  # no answer, not Vault's answer, or the check timed out
            return [("monitor_vault_up", {}, 0)]
        return [("monitor_vault_up", {}, 1), ("monitor_vault_sealed", {}, 1 if details.get("sealed") else 0)]
    if result.id == "vault-token":
        never = result.value is None and result.status == OK and details.get("expire_time") is None
        return [("monitor_vault_token_ttl_seconds", {}, math.inf if never else result.value)]
    return []


def levels(config: dict) -> dict:
    from monitor.fleet.kit import levels_of, schema_default

    vault = config.get("vault") or {}
    return {"token_ttl": levels_of(vault.get("token_ttl") or schema_default("vault", "token_ttl"))}


def rules(t: dict) -> dict:
    from monitor.fleet.kit import duration_text, health_runbook, num, pair, rule

    runbook, ttl = health_runbook("vault"), t["token_ttl"]
    return {"monitor_services": [
        rule("VaultDown", "monitor_vault_up == 0", "5m", "critical", "Vault is unreachable",
             "monitor on {{ $labels.instance }} gets no answer from Vault's health endpoint "
             "(monitor_vault_up = {{ $value }}).", runbook),
        rule("VaultSealed", "monitor_vault_sealed == 1", "1m", "critical", "Vault is sealed",
             "Vault answers monitor on {{ $labels.instance }} but is sealed (monitor_vault_sealed = {{ $value }}): "
             "the scraper cannot read its secrets until it is unsealed.", runbook),
        *pair("VaultTokenExpiring", lambda level: f"monitor_vault_token_ttl_seconds <= {num(level)}", ttl,
              ("5m", "5m"), "monitor's Vault token expires soon (SEVERITY)",
              "monitor's Vault token on {{ $labels.instance }} expires in {{ $value | humanizeDuration }} "
              f"(warning from {duration_text(ttl.warning)}, critical from {duration_text(ttl.critical)}); "
              "renew it or issue a new one.", runbook),
    ]}


def panels(t: dict) -> list:
    from monitor.fleet.kit import INSTANCE as I, lower_worse, mapping, panel, steps, target

    return [
        ("Security", panel("stat", "Vault reachable", [target(f"monitor_vault_up{{{I}}}")], "", "none",
                           steps("red", (1, "green")), mappings=mapping((0, "DOWN", "red"), (1, "UP", "green"))),
         5, 8),
        ("Security", panel("stat", "Vault sealed", [target(f"monitor_vault_sealed{{{I}}}")], "", "none",
                           steps("green", (1, "red")),
                           mappings=mapping((0, "unsealed", "green"), (1, "SEALED", "red"))), 5, 8),
        ("Security", panel("stat", "Vault token TTL", [target(f"monitor_vault_token_ttl_seconds{{{I}}}")],
                           "Remaining TTL of monitor's token (vault.token_ttl; a root token never expires).", "s",
                           lower_worse(t["token_ttl"])), 6, 8),
    ]
