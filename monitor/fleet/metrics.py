"""Prometheus exposition: each command's results as `monitor_<command>.prom`.

For node_exporter's textfile collector (and optionally a Pushgateway). A dedicated
CollectorRegistry, never the global one; imported only when a textfile folder or a
Pushgateway is configured. The file is written to a hidden temp name in the same
folder (not ending in `.prom`, so the collector never reads half a file), fsynced,
then renamed. Every HELP text is a constant, so the same metric name in the three
commands' files never clashes.
"""

import math

from prometheus_client import CollectorRegistry, Gauge, generate_latest

from monitor.results import EXIT_CODES

# Metric name -> (help, labels). Names end in their unit.
METRICS = {
    "monitor_check_status": ("Check status: 0 ok, 1 warning, 2 critical, 3 unknown.", ("command", "check", "kind")),
    "monitor_check_value": ("The value a check measured, in the check's own unit.", ("command", "check", "kind")),
    "monitor_last_run_timestamp_seconds": ("When the command last finished, as a Unix time.", ("command",)),
    "monitor_run_duration_seconds": ("How long the command's last run took.", ("command",)),
    "monitor_cpu_usage_percent": ("CPU busy percent since the previous health run.", ()),
    "monitor_memory_usage_percent": ("Memory used percent.", ()),
    "monitor_disk_usage_percent": ("Disk space used percent, as df counts it.", ("path",)),
    "monitor_vault_up": ("1 if Vault answered its health endpoint.", ()),
    "monitor_vault_sealed": ("1 if Vault is sealed.", ()),
    "monitor_vault_token_ttl_seconds": ("Remaining TTL of monitor's Vault token (+Inf: never expires).", ()),
    "monitor_scraper_up": ("1 if every probe of the scraper is ok or warning.", ("scraper",)),
    "monitor_scraper_response_seconds": ("Response time of the scraper's health endpoint.", ("scraper",)),
    "monitor_scraper_heartbeat_age_seconds": ("Age of the file the scraper touches on success.", ("scraper",)),
    "monitor_api_quota_remaining_ratio": ("Remaining fraction of the provider's API quota.", ("api",)),
    "monitor_backup_age_seconds": ("Age of the newest file of the backup set.", ("backup",)),
    "monitor_backup_size_bytes": ("Size of the newest file of the backup set.", ("backup",)),
    "monitor_outbox_messages": ("Telegram messages waiting in the outbox.", ()),
    "daily_opportunities_count": ("Opportunities found during the reported day.", ()),
    "daily_avg_roi": ("Average ROI of the opportunities of the reported day.", ()),
    "daily_sources_active": ("Distinct sources with opportunities during the reported day.", ()),
    "daily_errors_count": ("ERROR and CRITICAL log records during the reported day.", ()),
}


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def build_registry(command: str, results, finished_at: float, duration_s: float,
                   notifications: dict | None = None, report: dict | None = None) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    gauges = {}

    def gauge(name):
        if name not in gauges:
            help_text, labels = METRICS[name]
            gauges[name] = Gauge(name, help_text, labels, registry=registry)
        return gauges[name]

    def put(name, value, never=False, **labels):
        # Only finite samples: +Inf/NaN from a hostile answer would break alert rules.
        # `never`: the one deliberate +Inf, a Vault token that never expires.
        if _finite(value) or never:
            g = gauge(name)
            (g.labels(**labels) if labels else g).set(value)

    for r in results:
        put("monitor_check_status", EXIT_CODES[r.status], command=command, check=r.id, kind=r.kind)
        put("monitor_check_value", r.value, command=command, check=r.id, kind=r.kind)
        d = r.details or {}
        if r.id == "cpu":
            put("monitor_cpu_usage_percent", r.value)
        elif r.id == "memory":
            put("monitor_memory_usage_percent", r.value)
        elif r.id.startswith("disk:"):
            put("monitor_disk_usage_percent", r.value, path=r.id[5:])
        elif r.id == "vault":
            reachable = "sealed" in d
            put("monitor_vault_up", 1 if reachable else 0)
            if reachable:
                put("monitor_vault_sealed", 1 if d.get("sealed") else 0)
        elif r.id == "vault-token":
            # A token that never expires (root) has no TTL: +Inf keeps "ttl < X" alerts quiet.
            never = r.value is None and r.status == "ok" and d.get("expire_time") is None
            put("monitor_vault_token_ttl_seconds", math.inf if never else r.value, never=never)
        elif r.kind == "scraper":
            name = r.id.split(":", 1)[1]
            put("monitor_scraper_up", 1 if r.status in ("ok", "warning") else 0, scraper=name)
            http = d.get("http") if isinstance(d.get("http"), dict) else {}
            latency = http.get("latency_ms")
            if _finite(latency):
                put("monitor_scraper_response_seconds", latency / 1000, scraper=name)
            heartbeat = d.get("heartbeat") if isinstance(d.get("heartbeat"), dict) else {}
            put("monitor_scraper_heartbeat_age_seconds", heartbeat.get("age_seconds"), scraper=name)
        elif r.kind == "quota" and _finite(r.value):
            put("monitor_api_quota_remaining_ratio", r.value / 100, api=r.id.split(":", 1)[1])
        elif r.kind == "backup":
            name = r.id.split(":", 1)[1]
            put("monitor_backup_age_seconds", d.get("age_seconds"), backup=name)
            put("monitor_backup_size_bytes", d.get("size_bytes"), backup=name)
    put("monitor_last_run_timestamp_seconds", finished_at, command=command)
    put("monitor_run_duration_seconds", duration_s, command=command)
    if command == "health" and notifications and _finite(notifications.get("outbox")):
        put("monitor_outbox_messages", notifications["outbox"])
    if report:
        put("daily_opportunities_count", report.get("opportunities_found"))
        put("daily_avg_roi", report.get("avg_roi"))
        put("daily_sources_active", report.get("sources_active"))
        errors = report.get("errors")
        put("daily_errors_count", errors.get("count") if isinstance(errors, dict) else errors)
    return registry


def write_textfile(folder: str, command: str, registry: CollectorRegistry) -> str:
    """Write `monitor_<command>.prom` atomically; return its path. Raise OSError on failure."""
    import os

    from monitor.state import atomic_write

    if not os.path.isdir(folder):
        import errno

        code = errno.ENOTDIR if os.path.exists(folder) else errno.ENOENT
        raise OSError(code, os.strerror(code), folder)
    path = os.path.join(folder, f"monitor_{command}.prom")
    atomic_write(path, generate_latest(registry), mode=0o644)
    return path


def push(url: str, command: str, host: str, registry: CollectorRegistry, timeout: float = 5.0) -> None:
    """Push to a Pushgateway: job "monitor", grouped by instance and command.

    A `user:password@` in the URL (its password from a `${NAME}` placeholder) is sent
    as HTTP basic auth and taken out of the URL, so no error message can quote it.
    """
    from prometheus_client import push_to_gateway
    from prometheus_client.exposition import basic_auth_handler, default_handler

    handler = default_handler
    scheme, sep, rest = url.partition("://")
    netloc, slash, path = rest.partition("/")
    if sep and "@" in netloc:
        from urllib.parse import unquote

        userinfo, _, hostport = netloc.rpartition("@")
        user, _, password = userinfo.partition(":")
        url = f"{scheme}://{hostport}{slash}{path}"

        def handler(url, method, timeout, headers, data):
            return basic_auth_handler(url, method, timeout, headers, data, unquote(user), unquote(password))

    push_to_gateway(url, job="monitor", registry=registry, timeout=timeout,
                    grouping_key={"instance": host, "command": command}, handler=handler)
