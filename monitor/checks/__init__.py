"""The checks of each command, built from the config as a list of `runner.Check`.

Each kind lives in its own module (`system.py`, `cron.py`, `vault.py`, `scrapers.py`,
`quotas.py`, `backups.py`, `business.py`); modules are imported only when their
section is configured, so a host-only run never loads requests or hvac.

Each module also declares what its checks export, next to their code; the textfile
(`fleet/metrics.py`), the alert headlines (`alerts/messages.py`), the rules and the
dashboard (`fleet/rules.py`, `fleet/dashboard.py`) read it through the functions at the
end of this file and never name a check. Every name is optional:

    check_ids(config)  the ids of its checks for this config
    METRICS            its Prometheus gauges: name -> (help, label names)
    samples(result)    the samples one of its results exports: [(name, {label: value}, value)];
                       only finite values are written, +Inf too for the names in INFINITE_OK
    MEASURES           check id prefix -> (what the value measures, lower is worse) for
                       alert headlines, plus the details key of a minimum the value must reach
    levels(config)     the thresholds its rules and panels use: {key: level}
    rules(t)           its alert rules, given every module's levels: {group name: [rule]}
    panels(t)          its dashboard panels: [(row title, panel, width, height)]
"""

import importlib
import logging
import math
from functools import partial

from monitor import redact
from monitor.checks import system
from monitor.checks.procfs import host_source
from monitor.results import CRITICAL, is_number
from monitor.runner import Check

HEALTH_KINDS = ("system", "vault", "scraper", "quota")
# A network check's own (connect, read) timeouts and deadline fire first and say
# what happened; the runner's timeout is the backstop a little later.
MARGIN_SECONDS = 0.5


def health_checks(config: dict, counters, only: set[str] | None = None) -> list[Check]:
    """Return the checks `monitor health` runs for this config (`only`: a subset of kinds)."""
    wanted = only or set(HEALTH_KINDS)
    checks: list[Check] = []
    if "system" in wanted:
        from monitor.checks.cron import cron

        checks += system_checks(config["system"], counters)
        checks.append(Check("cron", "system", partial(cron, config, counters), config["system"]["timeout"]))
    if "vault" in wanted and config.get("vault"):
        checks += vault_checks(config["vault"])
    http_session = None
    if ("scraper" in wanted and config["scrapers"]) or ("quota" in wanted and config["quotas"]):
        from monitor.http import new_session

        http_session = new_session()  # one pooled session: every probe runs at once
    if "scraper" in wanted:
        checks += scraper_checks(config["scrapers"], http_session)
    if "quota" in wanted:
        checks += quota_checks(config["quotas"], http_session)
    return checks


def vault_checks(cfg: dict) -> list[Check]:
    from monitor.checks import vault
    from monitor.vault_secrets import read_token

    token, warnings = read_token(cfg)
    for warning in warnings:
        logging.getLogger("monitor").warning("vault: %s", warning, extra={"event": "vault_token"})
    redact.register(token)
    timeout = cfg["timeout"] + MARGIN_SECONDS
    note = None if token else "no token: vault-token check skipped"
    checks = [Check("vault", "vault", partial(vault.health, cfg, note), timeout, on_timeout=CRITICAL)]
    if token:
        checks.append(Check("vault-token", "vault", partial(vault.token, cfg, token), timeout,
                            on_timeout=CRITICAL))
    return checks


def scraper_checks(scrapers: list[dict], session) -> list[Check]:
    if not scrapers:
        return []
    from monitor.checks import scrapers as scraper_module

    return [Check(f"scraper:{cfg['name']}", "scraper", partial(scraper_module.scraper, cfg, session),
                  cfg["timeout"] + MARGIN_SECONDS, on_timeout=CRITICAL) for cfg in scrapers]


def quota_checks(quotas: list[dict], session) -> list[Check]:
    if not quotas:
        return []
    from monitor.checks import quotas as quota_module

    return [Check(f"quota:{cfg['name']}", "quota", partial(quota_module.quota, cfg, session),
                  cfg["timeout"] + MARGIN_SECONDS) for cfg in quotas]


def system_checks(cfg: dict, counters) -> list[Check]:
    timeout, source = cfg["timeout"], host_source()
    checks = [
        Check("cpu", "system", partial(system.cpu, cfg["cpu_percent"], counters, source, cfg["cpu_min_span"]),
              timeout),
        Check("memory", "system", partial(system.memory, cfg["memory_percent"], source), timeout),
        Check("swap", "system", partial(system.swap, cfg["swap_percent"], source), timeout),
        Check("load", "system", partial(system.load, cfg["load_per_cpu"]), timeout),
    ]
    for path in cfg["disk_paths"]:
        # statvfs on a dead NFS mount never returns: no answer means the disk is gone.
        checks.append(Check(f"disk:{path}", "system", partial(system.disk, path, cfg["disk_percent"]),
                            timeout, on_timeout=CRITICAL))
        checks.append(Check(f"inodes:{path}", "system", partial(system.inodes, path, cfg["inodes_percent"]),
                            timeout, on_timeout=CRITICAL))
    checks.append(Check("network", "system", partial(system.network, cfg["network_interfaces"], counters, source),
                        timeout))
    return checks


def backup_checks(config: dict, cache) -> list[Check]:
    """Return the checks of `monitor backup-check`: one per [[backups]] set, run at once."""
    if not config["backups"]:
        return []
    from monitor.checks import backups

    return [Check(f"backup:{cfg['name']}", "backup", partial(backups.backup, cfg, cache),
                  cfg["timeout"] + MARGIN_SECONDS) for cfg in config["backups"]]


def known_check_ids(config: dict, alert_state: dict) -> set[str]:
    """Check ids this config produces or that alerted before (for `silence add` notes)."""
    ids = {i for module in catalog() if hasattr(module, "check_ids") for i in module.check_ids(config)}
    ids |= set((alert_state or {}).get("checks", {}))
    return ids


# --- what the check modules declare ----------------------------------------------------------

# Every check module and the kind of the results it produces, in the order the rules and
# the dashboard list what they declare.
MODULES = {"system": "system", "cron": "system", "vault": "vault", "scrapers": "scraper",
           "quotas": "quota", "backups": "backup", "business": "business"}


def catalog() -> list:
    """Every check module, imported: for `monitor render` and `silence add`, never a check run."""
    return [importlib.import_module(f"{__name__}.{name}") for name in MODULES]


def of_kind(kind: str) -> list:
    """The modules that declare what results of `kind` export (already loaded by the run)."""
    return [importlib.import_module(f"{__name__}.{name}") for name, of in MODULES.items() if of == kind]


def exported(result) -> list[tuple]:
    """(name, help, label names, labels, value) of each gauge sample `result` exports.

    Only finite values: +Inf or NaN from a hostile answer would break alert rules. The one
    deliberate +Inf is a metric's own declaration (INFINITE_OK: a token that never expires).
    """
    out = []
    for module in of_kind(result.kind):
        if not hasattr(module, "samples"):
            continue
        for name, labels, value in module.samples(result):
            if is_number(value) or (value == math.inf and name in getattr(module, "INFINITE_OK", ())):
                help_text, label_names = module.METRICS[name]
                out.append((name, help_text, label_names, labels, value))
    return out


def measure(kind: str, check_id: str) -> tuple | None:
    """What the value of check `check_id` measures, for alert headlines (see MEASURES), or None."""
    prefix = check_id.split(":", 1)[0]
    for module in of_kind(kind):
        found = getattr(module, "MEASURES", {}).get(prefix)
        if found:
            return found
    return None


def metrics() -> dict:
    """Every gauge the check modules declare: name -> (help, label names)."""
    return {name: spec for module in catalog() for name, spec in getattr(module, "METRICS", {}).items()}
