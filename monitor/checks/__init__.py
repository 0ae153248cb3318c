"""The checks of each command, built from the config as a list of `runner.Check`.

Each kind lives in its own module (`system.py`, later `vault.py`, `scrapers.py`,
`quotas.py`, `backups.py`); modules are imported only when their section is
configured, so a host-only run never loads requests or hvac.
"""

from functools import partial

from monitor.results import CRITICAL
from monitor.runner import Check

HEALTH_KINDS = ("system",)


def health_checks(config: dict, counters, only: set[str] | None = None) -> list[Check]:
    """Return the checks `monitor health` runs for this config (`only`: a subset of kinds)."""
    wanted = only or set(HEALTH_KINDS)
    checks: list[Check] = []
    if "system" in wanted:
        checks += system_checks(config["system"], counters)
    return checks


def system_checks(cfg: dict, counters) -> list[Check]:
    from monitor.checks import system
    from monitor.checks.procfs import host_source

    timeout, source = cfg["timeout"], host_source()
    checks = [
        Check("cpu", "system", partial(system.cpu, cfg["cpu_percent"], counters, source), timeout),
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


def known_check_ids(config: dict, alert_state: dict) -> set[str]:
    """Check ids this config produces or that alerted before (for `silence add` notes)."""
    ids = {"cpu", "memory", "swap", "load", "network"}
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
