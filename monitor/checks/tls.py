"""TLS certificate expiry (kind `tls`): judge the certificates the run's own connections were shown.

Every `https` scraper url, quota url and Vault address is a target `host:port`; one
`tls:<host:port>` check per distinct target, so a certificate several probes use alerts
once (`details.used_by` names them). Nothing connects here: the probes' client and the
Vault client record each handshake's leaf certificate (`monitor/peer_certs.py`), and
these checks run after every other check has finished (`runner.Check.after`). The time
left is judged with `tls_expiry` (lower is worse), the strictest of the entries using
the target. Expired or not yet valid is critical with the date; a certificate the
verification refused is critical with OpenSSL's reason and, when the client that was
refused could read it by one handshake without verification, its dates (the refused
handshake hands no certificate over; unread or unparsable, still critical);
`verify = false` still reads and judges it. No connection reached TLS (refused, DNS,
timed out): unknown, since nothing was learnt about the certificate; the probe's own
check says why.
"""

import os
import time
from functools import partial
from typing import NamedTuple
from urllib.parse import urlsplit

from monitor.results import CRITICAL, OK, UNKNOWN, Result, Threshold
from monitor.runner import Check
from monitor.text import clip
from monitor.units import format_duration

DEFAULT_EXPIRY = Threshold(14 * 86400, 3 * 86400, lower_is_worse=True)
TIMEOUT = 2.0  # reads what the probes recorded: no I/O
# OpenSSL's X509_V_ERR_CERT_NOT_YET_VALID and X509_V_ERR_CERT_HAS_EXPIRED.
NOT_YET_VALID, EXPIRED = 9, 10
# The config section -> the MODULES name that probes it and the check id prefix of its entries.
SECTIONS = {"scrapers": ("scrapers", "scraper"), "quotas": ("quotas", "quota"), "vault": ("vault", "vault")}


class Target(NamedTuple):
    host: str            # as the clients connect to it (IDNA, IPv6 without brackets)
    port: int
    shown: str           # host:port, [v6]:port
    used_by: tuple       # check ids of the probes connecting to it
    threshold: Threshold  # the strictest tls_expiry of those
    unverified: tuple    # those of them with verify = false


def _origin(url: str) -> tuple[str, int] | None:
    """(host, port) of an https URL, or None (http, or a URL the probe itself will refuse)."""
    try:
        parts = urlsplit(url)
        if parts.scheme.lower() != "https" or not parts.hostname:
            return None
        host, port = parts.hostname.lower(), parts.port or 443
        return (host if host.isascii() else host.encode("idna").decode()), port
    except (ValueError, UnicodeError):
        return None


def targets(config: dict, modules=None, environ=None) -> list[Target]:
    """The https targets of the config's scrapers, quotas and Vault, in that order.

    `modules`: only the sections whose MODULES entry is among them (this run's: `--only`).
    """
    from monitor.vault_secrets import vault_url

    found: dict = {}
    for section, (module, prefix) in SECTIONS.items():
        if not config.get(section) or (modules is not None and module not in modules):
            continue
        if section == "vault":
            cfg = config["vault"]
            entries = [("vault", vault_url(cfg, os.environ if environ is None else environ)[0], cfg,
                        bool(cfg.get("ca_cert") or cfg.get("verify", True)))]
        else:
            entries = [(f"{prefix}:{e['name']}", e.get("url") or "", e, bool(e.get("verify", True)))
                       for e in config[section]]
        for check_id, url, cfg, verify in entries:
            origin = _origin(url)
            if origin is None:
                continue
            level = cfg.get("tls_expiry") or DEFAULT_EXPIRY
            known = found.get(origin)
            if known is None:
                host, port = origin
                shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
                found[origin] = Target(host, port, shown, (check_id,), level, () if verify else (check_id,))
            else:  # the strictest: the one that warns earliest, and is critical earliest
                strictest = Threshold(max(known.threshold.warning, level.warning),
                                      max(known.threshold.critical, level.critical), True)
                found[origin] = known._replace(used_by=known.used_by + (check_id,), threshold=strictest,
                                               unverified=known.unverified + (() if verify else (check_id,)))
    return list(found.values())


def _date(moment) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def expiry(target: Target, certificates, now=time.time) -> Result:
    """Given a target and what the run's connections recorded, return its `tls:` Result."""
    from monitor.peer_certs import read_der

    threshold = target.threshold
    details: dict = {"target": target.shown, "used_by": list(target.used_by), "unverified": list(target.unverified)}

    def result(status: str, message: str, value=None) -> Result:
        return Result(status, message, value, "s", threshold.warning, threshold.critical, details,
                      lower_is_worse=threshold.lower_is_worse)

    seen = certificates.get(target.host, target.port) if certificates is not None else None
    if seen is None:
        return result(UNKNOWN, f"no connection to {target.shown} this run: certificate not seen")
    refused = seen.verify_code is not None  # by the verification; `der`: read without it
    why = {EXPIRED: " (expired)", NOT_YET_VALID: " (not yet valid)"}.get(seen.verify_code, "")
    if refused:
        details["failure"] = clip(seen.failure, 200)
    if seen.der is None:
        details["failure"] = clip(seen.failure, 200)
        if refused:
            return result(CRITICAL, f"certificate of {target.shown} refused{why}: {clip(seen.failure, 200)}; "
                                    "its dates could not be read")
        where = "during the TLS handshake" if seen.at_tls else "before TLS"
        return result(UNKNOWN, f"certificate of {target.shown} not seen: the connection failed {where} "
                               f"({clip(seen.failure, 200)})")
    try:
        cert = read_der(seen.der)
    except ValueError as exc:
        if refused:  # the refusal stands: only the dates read without verification are lost
            return result(CRITICAL, f"certificate of {target.shown} refused{why}: {clip(seen.failure, 200)}; "
                                    f"its dates could not be read ({exc})")
        return result(UNKNOWN, f"certificate of {target.shown} could not be read: {exc}")
    moment = now()
    left = round(cert.not_after.timestamp() - moment)
    names = [clip(n, 100) for n in cert.names]
    details.update(cert_expires_in_seconds=left, not_after=cert.not_after.isoformat(),
                   not_before=cert.not_before.isoformat(), subject_cn=clip(cert.subject_cn, 100),
                   names=names, names_total=cert.names_total, issuer_cn=clip(cert.issuer_cn, 100))
    about = f"CN {clip(cert.subject_cn, 100)}" if cert.subject_cn else (f"SAN {names[0]}" if names else "no name")
    if cert.issuer_cn:
        about += f", issuer {clip(cert.issuer_cn, 100)}"
    if target.unverified:
        about += f", verify = false for {', '.join(target.unverified)}"
    refusal = f"; refused: {clip(seen.failure, 200)}" if refused else ""
    if moment < cert.not_before.timestamp():
        return result(CRITICAL, f"certificate of {target.shown} is not valid until {_date(cert.not_before)} "
                                f"(in {format_duration(cert.not_before.timestamp() - moment)}; {about}){refusal}",
                      left)
    if left <= 0:
        return result(CRITICAL, f"certificate of {target.shown} expired on {_date(cert.not_after)} "
                                f"({format_duration(-left)} ago; {about}){refusal}", left)
    if refused:  # untrusted, another name, or a certificate of its chain out of its dates
        chain = {EXPIRED: " (a certificate of its chain has expired)",
                 NOT_YET_VALID: " (a certificate of its chain is not yet valid)"}.get(seen.verify_code, "")
        return result(CRITICAL, f"certificate of {target.shown} refused{chain}: {clip(seen.failure, 200)} "
                                f"(it expires in {format_duration(left)}, on {_date(cert.not_after)}; {about})",
                      left)
    status = threshold.judge(left)
    return result(status, f"certificate of {target.shown} expires in {format_duration(left)}, on "
                          f"{_date(cert.not_after)} ({about})", left)


# --- what these checks export (the contract: monitor/checks/__init__.py) ----------------------

METRICS = {
    "monitor_tls_cert_expiry_seconds": ("Seconds until the TLS certificate of an https target expires "
                                        "(negative: expired), as the run's own connections saw it.", ("target",)),
}
MEASURES = {"tls": ("expiry", True)}


def checks(config: dict, carried=None, shared=None) -> list:
    """One check per https target of the scrapers, quotas and Vault this run probes, after them."""
    if shared is None:
        return []
    found = targets(config, set(shared.built))
    certificates = shared.peer_certificates() if found else None
    return [Check(f"tls:{t.shown}", "tls", partial(expiry, t, certificates), TIMEOUT, after=True) for t in found]


def check_ids(config: dict) -> list[str]:
    return [f"tls:{t.shown}" for t in targets(config)]


def samples(result) -> list:
    left = (result.details or {}).get("cert_expires_in_seconds")
    return [("monitor_tls_cert_expiry_seconds", {"target": result.id.split(":", 1)[1]}, left)]


def levels(config: dict) -> dict:
    from monitor.fleet.kit import per_name, schema_default

    # Label values in a rule's regex: "." is escaped by the kit, IPv6 brackets here.
    items = [{"name": t.shown.replace("[", "[[]").replace("]", "[]]"), "tls_expiry": t.threshold}
             for t in targets(config)]
    default = schema_default("scrapers", "tls_expiry")
    return {"tls_warning": per_name(items, "tls_expiry", "target", default, lambda t: t.warning),
            "tls_critical": per_name(items, "tls_expiry", "target", default, lambda t: t.critical)}


def rules(t: dict) -> dict:
    from monitor.fleet.kit import compare, duration_text, health_runbook, level_text, rule

    runbook = health_runbook("scraper,quota,vault,tls")
    expiring = [rule(
        "TlsCertificateExpiring", compare("monitor_tls_cert_expiry_seconds", "<=", t[key]), for_, severity,
        f"TLS certificate of {{{{ $labels.target }}}} expires soon ({severity})",
        "The certificate of {{ $labels.target }}, as {{ $labels.instance }} sees it, expires in "
        f"{{{{ $value | humanizeDuration }}}} ({severity} from {level_text(t[key], duration_text)}; negative "
        "once expired). Renew it.", runbook)
        for severity, key, for_ in (("warning", "tls_warning", "10m"), ("critical", "tls_critical", "5m"))]
    # A critical tls check the expiry rule does not cover: refused (untrusted, another name, a
    # chain certificate out of its dates), not yet valid, or refused with its dates unread.
    # The check id is tls:<target>: the expiry samples are matched to it by that label.
    covered = (f'label_replace({compare("monitor_tls_cert_expiry_seconds", "<=", t["tls_critical"])}, '
               '"check", "tls:$1", "target", "(.+)")')
    invalid = rule(
        "TlsCertificateInvalid", f'monitor_check_status{{kind="tls"}} == 2 unless on(instance, job, check) {covered}',
        "5m", "critical",
        'TLS certificate of {{ reReplaceAll "^tls:" "" $labels.check }} refused or not yet valid (critical)',
        "The check {{ $labels.check }} on {{ $labels.instance }} is critical (status {{ $value }}) and not for "
        "the time left: the certificate is refused (not trusted, another name, a certificate of its chain "
        "expired) or not yet valid. Its message says why.", runbook)
    return {"monitor_services": expiring + [invalid]}


def panels(t: dict) -> list:
    from monitor.fleet.kit import INSTANCE as I, Levels, lower_worse, panel, target

    levels = Levels(t["tls_warning"].default, t["tls_critical"].default)
    return [("Ahead", panel("timeseries", "TLS certificate expires in",
                            [target(f"monitor_tls_cert_expiry_seconds{{{I}}}", "{{instance}} {{target}}")],
                            "Time left on the certificate of each https scraper, quota and Vault address, as "
                            "the health run's own connections saw it (tls_expiry).", "s",
                            lower_worse(levels)), 12, 8)]
