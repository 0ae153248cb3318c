"""The checks of each command, built from the config as a list of `runner.Check`.

Each kind lives in its own module (`system.py`, `cron.py`, `vault.py`, `scrapers.py`,
`quotas.py`, `backups.py`, `business.py`); modules are imported only when their
section is configured, so a host-only run never loads requests or hvac.
"""

from functools import partial

from monitor.results import CRITICAL
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
    import logging

    from monitor import redact
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
    from monitor.checks import system
    from monitor.checks.procfs import host_source

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
    ids = {"cpu", "memory", "swap", "load", "network", "cron"}
    for path in config["system"]["disk_paths"]:
        ids |= {f"disk:{path}", f"inodes:{path}"}
    if config.get("vault"):
        ids |= {"vault", "vault-token"}
    ids |= {f"scraper:{s['name']}" for s in config["scrapers"]}
    ids |= {f"quota:{q['name']}" for q in config["quotas"]}
    ids |= {f"backup:{b['name']}" for b in config["backups"]}
    if config.get("report"):
        ids |= {"opportunities", "sources", "errors"}
    ids |= set((alert_state or {}).get("checks", {}))
    return ids
