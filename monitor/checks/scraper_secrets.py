"""Can the scraper read its secrets (kind `vault`): `vault-secrets` and `vault-token:scraper`.

`secrets` reads each `vault.secrets` reference ("mount/path#key", KV v2) with the
scraper's own token (`vault.scraper_token_env` / `scraper_token_file`), else monitor's,
and is critical naming each one that is missing (404), forbidden (403: a policy
change) or empty: what would stop the scraper at its next restart. Only whether a
value is there is learnt (`SecretStore.readable`); no value reaches a Result.
`vault-token:scraper` is monitor's own `vault-token` check run on the scraper's token.
"""

import logging
import time
from functools import partial

from monitor.checks import MARGIN_SECONDS
from monitor.results import CRITICAL, OK, UNKNOWN, Result, worst
from monitor.runner import Check

# What the operator reads for each reason a reference is not readable.
WORDING = {
    "forbidden": "forbidden (HTTP 403: the token's policy lacks read on {mount}/data/{path}, or the token "
                 "is revoked)",
    "missing": "missing (HTTP 404)",
    "no key": 'has no key "{key}"',
    "empty": "is empty",
}
DECIDED = ("forbidden", "missing", "no key", "empty")  # a verdict on the secret itself: critical
MAX_WHY = 300


def _whose(cfg: dict) -> str:
    return "the scraper's token" if _scraper_configured(cfg) else "monitor's token"


def _scraper_configured(cfg: dict) -> bool:
    return bool(cfg.get("scraper_token_env") or cfg.get("scraper_token_file"))


def secrets(cfg: dict, token: str | None, token_note: str, *, environ=None, clock=time.monotonic) -> Result:
    """Given the `vault` config and the token to read with, return the `vault-secrets` Result.

    Every reference is tried (each path read once) within `vault.timeout` in all; the
    value is how many are readable. Critical when any is missing, forbidden, without
    its key or empty; unknown when Vault gave no verdict on some (unreachable, sealed).
    """
    import os

    from monitor.vault_secrets import SecretError, SecretStore, parse_ref

    refs = list(dict.fromkeys(cfg["secrets"]))
    details: dict = {"token": token_note, "readable": [], "unreadable": {}}
    if not token:
        return Result(UNKNOWN, f"cannot check {len(refs)} secret(s): no token ({token_note})", unit="secrets",
                      details=details)
    store = SecretStore(cfg, token, os.environ if environ is None else environ,
                        deadline=clock() + float(cfg["timeout"]), clock=clock)
    bad, undecided = [], []
    for ref in refs:
        try:
            reason, why = (None, "") if store.readable(ref) else ("empty", f"{ref}: the value is empty")
        except SecretError as exc:
            reason, why = exc.reason, str(exc)
        if reason is None:
            details["readable"].append(ref)
            continue
        why = why if len(why) <= MAX_WHY else why[:MAX_WHY - 1] + "…"  # the key names of a crowded path
        details["unreadable"][ref] = {"reason": reason, "why": why}
        if reason in DECIDED:
            mount, path, key = parse_ref(ref)
            bad.append(f"{ref} {WORDING[reason].format(mount=mount, path=path, key=key)}")
        else:
            undecided.append(why)
    readable = len(details["readable"])
    whose = _whose(cfg)
    if not bad and not undecided:
        return Result(OK, f"{readable} of {len(refs)} secret(s) readable with {whose}", readable, "secrets",
                      details=details)
    parts = []
    if bad:
        parts.append(f"{len(bad)} of {len(refs)} secret(s) not readable with {whose}: " + "; ".join(bad))
    if undecided:
        parts.append(f"{len(undecided)} could not be checked: " + "; ".join(undecided))
    status = worst(CRITICAL if bad else OK, UNKNOWN if undecided else OK)
    return Result(status, "; ".join(parts) + f" ({readable} readable)", readable, "secrets", details=details)


def _token_unknown(reason: str) -> Result:
    return Result(UNKNOWN, f"no scraper token to check: {reason}", unit="s")


# --- what these checks export (the contract: monitor/checks/__init__.py) ----------------------

METRICS = {
    "monitor_vault_secrets_readable": ("1 if the scraper's token can read this vault.secrets reference, "
                                       "0 if it is missing, forbidden or empty.", ("secret",)),
    "monitor_vault_scraper_token_ttl_seconds": ("Remaining TTL of the scraper's Vault token "
                                                "(+Inf: never expires).", ()),
}
INFINITE_OK = ("monitor_vault_scraper_token_ttl_seconds",)


def _scraper_token(cfg: dict) -> tuple[str | None, str]:
    """(the scraper's token or None, where it came from or why there is none)."""
    from monitor.vault_secrets import read_token

    secret, warnings = read_token(cfg, which="scraper_token")
    for warning in warnings:
        logging.getLogger("monitor").warning("vault: %s", warning, extra={"event": "vault_token"})
    name, path = cfg.get("scraper_token_env"), cfg.get("scraper_token_file")
    if secret:
        import os

        from_env = name and os.environ.get(name, "").strip()
        return secret, f"scraper's, from ${name}" if from_env else f"scraper's, from {path}"
    tried = ([f"${name} is not set"] if name else []) + [w for w in warnings if "accessible" not in w]
    return None, "; ".join(tried) or "no scraper token"


def checks(config: dict, carried=None, shared=None) -> list:
    """`vault-secrets` with `vault.secrets`; `vault-token:scraper` with a scraper token source."""
    from monitor import redact as redaction
    from monitor.checks.vault import token as token_check
    from monitor.vault_secrets import read_token

    cfg = config["vault"]
    scraper = _scraper_configured(cfg)
    if not cfg.get("secrets") and not scraper:
        return []
    if scraper:
        secret, note = _scraper_token(cfg)
    else:  # monitor's own: the `vault` module has already logged what was wrong with it
        secret = read_token(cfg)[0]
        note = "monitor's" if secret else "monitor has no Vault token (vault.token_env or vault.token_file)"
    redaction.register(secret)
    timeout = cfg["timeout"] + MARGIN_SECONDS
    found = []
    if cfg.get("secrets"):
        found.append(Check("vault-secrets", "vault", partial(secrets, cfg, secret, note), timeout,
                           on_timeout=UNKNOWN))
    if scraper:
        probe = partial(token_check, cfg, secret) if secret else partial(_token_unknown, note)
        found.append(Check("vault-token:scraper", "vault", probe, timeout, on_timeout=CRITICAL))
    return found


def check_ids(config: dict) -> list[str]:
    cfg = config.get("vault") or {}
    return ((["vault-secrets"] if cfg.get("secrets") else [])
            + (["vault-token:scraper"] if _scraper_configured(cfg) else []))


def samples(result) -> list:
    import math

    details = result.details or {}
    if result.id == "vault-secrets":
        unreadable = details.get("unreadable") or {}
        return ([("monitor_vault_secrets_readable", {"secret": ref}, 1) for ref in details.get("readable") or []]
                + [("monitor_vault_secrets_readable", {"secret": ref}, 0) for ref, why in unreadable.items()
                   if isinstance(why, dict) and why.get("reason") in DECIDED])
    if result.id == "vault-token:scraper":
        never = result.value is None and result.status == OK and details.get("expire_time") is None
        return [("monitor_vault_scraper_token_ttl_seconds", {}, math.inf if never else result.value)]
    return []


def rules(t: dict) -> dict:
    from monitor.fleet.kit import duration_text, health_runbook, num, pair, rule

    # The scraper's token is judged with vault.token_ttl: the `vault` module's levels.
    runbook, ttl = health_runbook("vault"), t["token_ttl"]
    return {"monitor_services": [
        rule("VaultSecretUnreadable", "monitor_vault_secrets_readable == 0", "5m", "critical",
             "The scraper cannot read a secret it needs",
             "{{ $labels.secret }} cannot be read on {{ $labels.instance }}: missing, forbidden (a policy "
             "change?) or empty (monitor_vault_secrets_readable = {{ $value }}); the scraper fails at its next restart.",
             runbook),
        *pair("VaultScraperTokenExpiring", lambda level: f"monitor_vault_scraper_token_ttl_seconds <= {num(level)}",
              ttl, ("5m", "5m"), "The scraper's Vault token expires soon (SEVERITY)",
              "The scraper's Vault token on {{ $labels.instance }} expires in {{ $value | humanizeDuration }} "
              f"(warning from {duration_text(ttl.warning)}, critical from {duration_text(ttl.critical)}); "
              "renew it or issue a new one.", runbook),
    ]}


def panels(t: dict) -> list:
    from monitor.fleet.kit import INSTANCE as I, lower_worse, mapping, panel, steps, target

    return [
        ("Security", panel("stat", "Scraper secrets readable",
                           [target(f"monitor_vault_secrets_readable{{{I}}}", "{{instance}} {{secret}}")],
                           "Each vault.secrets reference: UNREADABLE when it is missing, forbidden or empty "
                           "for the scraper's token (monitor health --only vault says why).", "none",
                           steps("red", (1, "green")),
                           mappings=mapping((0, "UNREADABLE", "red"), (1, "all readable", "green"))), 12, 8),
        ("Security", panel("stat", "Scraper token TTL", [target(f"monitor_vault_scraper_token_ttl_seconds{{{I}}}")],
                           "Remaining TTL of the scraper's own Vault token (vault.token_ttl).", "s",
                           lower_worse(t["token_ttl"])), 12, 8),
    ]
