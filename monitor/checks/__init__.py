"""The checks of each command, built from the config as a list of `runner.Check`.

Each kind lives in its own module (`system.py`, `cron.py`, `vault.py`, `scrapers.py`,
`quotas.py`, `backups.py`, `business.py`), listed once in MODULES below with the command
that runs it and the config section that turns it on; modules are imported only when
their section is configured, so a host-only run never loads requests or hvac. A module
builds its own checks: `checks(config, carried, shared)` returns its `runner.Check`s
(`carried`: what the previous run left, `state.Carried`; `shared`: the run's HTTP session).

Each module also declares what its checks export, next to their code; the textfile
(`fleet/metrics.py`), the alert headlines (`alerts/messages.py`), the rules and the
dashboard (`fleet/rules.py`, `fleet/dashboard.py`) read it through the functions at the
end of this file and never name a check. Every name is optional:

    checks(config, carried, shared)  its `runner.Check`s for this run (see above)
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
import math

from monitor.results import is_number
from monitor.runner import Check

# Every check module: the kind of its results, the command that runs it and the config
# section that turns it on (None: always), in the order checks run and the rules and the
# dashboard list what they declare. A module is imported only when its section is set.
MODULES = {
    "system": ("system", "health", None),
    "disks": ("system", "health", None),  # built by system.py, between load and network
    "cron": ("system", "health", None),
    "vault": ("vault", "health", "vault"),
    "scrapers": ("scraper", "health", "scrapers"),
    "quotas": ("quota", "health", "quotas"),
    "backups": ("backup", "backup-check", "backups"),
    "business": ("business", "daily-report", "report"),  # built by report/daily.py
    "scraper_secrets": ("vault", "health", "vault"),
    "logfiles": ("logs", "health", "logfiles"),
    "tls": ("tls", "health", ("scrapers", "quotas", "vault")),  # any of them; after the probes
}
# A network check's own (connect, read) timeouts and deadline fire first and say
# what happened; the runner's timeout is the backstop a little later.
MARGIN_SECONDS = 0.5


def kinds(command: str) -> tuple:
    """The kinds of the checks `command` runs (`monitor health --only` picks among them)."""
    return tuple(dict.fromkeys(kind for kind, of, _ in MODULES.values() if of == command))


HEALTH_KINDS = kinds("health")


class Shared:
    """What the checks of one run share: the probes' HTTP client (one event loop, sockets
    bounded by the fd limit: `monitor/http_loop.py`), made when first asked."""

    def __init__(self):
        self._session = None
        self._certificates = None
        self.built: list[str] = []  # the modules whose checks this run has, in MODULES order

    def http_session(self):
        if self._session is None:
            from monitor.http import new_session

            # every probe of the run goes through it
            self._session = new_session(certificates=self.peer_certificates())
        return self._session

    def peer_certificates(self):
        """The certificates this run's connections were shown (`peer_certs.PeerCertificates`)."""
        if self._certificates is None:
            from monitor.peer_certs import PeerCertificates

            self._certificates = PeerCertificates()
        return self._certificates


def build(command: str, config: dict, carried, only: set[str] | None = None) -> list[Check]:
    """The checks `command` runs for this config (`only`: a subset of kinds), in MODULES order.

    Each module turned on by its config section gives its own: `checks(config, carried, shared)`.
    """
    shared, checks = Shared(), []
    for name, (kind, of, section) in MODULES.items():
        if of != command or (only and kind not in only) or not _turned_on(config, section):
            continue
        module = importlib.import_module(f"{__name__}.{name}")
        if hasattr(module, "checks"):
            checks += module.checks(config, carried, shared)
            shared.built.append(name)
    return checks


def _turned_on(config: dict, section) -> bool:
    """A module's section (None: always; a tuple: any of those) is in the config."""
    return section is None or any(config.get(s) for s in ((section,) if isinstance(section, str) else section))


def health_checks(config: dict, carried, only: set[str] | None = None) -> list[Check]:
    """Return the checks `monitor health` runs for this config (`only`: a subset of kinds)."""
    return build("health", config, carried, only)


def backup_checks(config: dict, cache) -> list[Check]:
    """Return the checks of `monitor backup-check`: one per [[backups]] set, run at once."""
    return build("backup-check", config, cache)


def known_check_ids(config: dict, alert_state: dict) -> set[str]:
    """Check ids this config produces or that alerted before (for `silence add` notes)."""
    ids = {i for module in catalog() if hasattr(module, "check_ids") for i in module.check_ids(config)}
    ids |= set((alert_state or {}).get("checks", {}))
    return ids


# --- what the check modules declare ----------------------------------------------------------

def catalog() -> list:
    """Every check module, imported: for `monitor render` and `silence add`, never a check run."""
    return [importlib.import_module(f"{__name__}.{name}") for name in MODULES]


def of_kind(kind: str) -> list:
    """The modules that declare what results of `kind` export (already loaded by the run)."""
    return [importlib.import_module(f"{__name__}.{name}") for name, (of, _, _) in MODULES.items() if of == kind]


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
