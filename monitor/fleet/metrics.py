"""Prometheus exposition: each command's results as `monitor_<command>.prom`.

For node_exporter's textfile collector (and optionally a Pushgateway). A dedicated
CollectorRegistry, never the global one; imported only when a textfile folder or a
Pushgateway is configured. The file is written to a hidden temp name in the same
folder (not ending in `.prom`, so the collector never reads half a file), fsynced,
then renamed. Every HELP text is a constant, so the same metric name in the three
commands' files never clashes.
"""


from prometheus_client import CollectorRegistry, Gauge, generate_latest

import errno
import os

from monitor.checks import exported
from monitor.results import EXIT_CODES, is_number
from monitor.state import atomic_write

# monitor's own gauges: name -> (help, labels). Names end in their unit. What each check
# exports beyond its status and value, its module declares (`monitor.checks.exported`).
METRICS = {
    "monitor_check_status": ("Check status: 0 ok, 1 warning, 2 critical, 3 unknown.", ("command", "check", "kind")),
    "monitor_check_value": ("The value a check measured, in the check's own unit.", ("command", "check", "kind")),
    "monitor_last_run_timestamp_seconds": ("When the command last finished, as a Unix time.", ("command",)),
    "monitor_run_duration_seconds": ("How long the command's last run took.", ("command",)),
    "monitor_outbox_messages": ("Telegram messages waiting in the outbox.", ()),
}


def build_registry(command: str, results, finished_at: float, duration_s: float,
                   notifications: dict | None = None) -> CollectorRegistry:
    samples = []  # (name, help, label names, labels, value), in the order they are first set

    def own(name, labels, value):
        if is_number(value):
            samples.append((name, *METRICS[name], labels, value))

    for r in results:
        labels = {"command": command, "check": r.id, "kind": r.kind}
        own("monitor_check_status", labels, EXIT_CODES[r.status])
        own("monitor_check_value", labels, r.value)
        samples.extend(exported(r))
    own("monitor_last_run_timestamp_seconds", {"command": command}, finished_at)
    own("monitor_run_duration_seconds", {"command": command}, duration_s)
    if command == "health" and notifications:
        own("monitor_outbox_messages", {}, notifications.get("outbox"))
    # monitor's own names first, then the ones the seed fixed, as the files always listed them.
    samples.sort(key=lambda sample: not sample[0].startswith("monitor_"))

    registry = CollectorRegistry(auto_describe=False)
    gauges = {}
    for name, help_text, label_names, labels, value in samples:
        if name not in gauges:
            gauges[name] = Gauge(name, help_text, label_names, registry=registry)
        (gauges[name].labels(**labels) if labels else gauges[name]).set(value)
    return registry


def write_textfile(folder: str, command: str, registry: CollectorRegistry) -> str:
    """Write `monitor_<command>.prom` atomically; return its path. Raise OSError on failure."""
    if not os.path.isdir(folder):
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
