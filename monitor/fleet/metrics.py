"""Prometheus exposition: each command's results as `monitor_<command>.prom`.

For node_exporter's textfile collector (and optionally a Pushgateway). The text is
written here, in the exposition format exactly as prometheus_client's generate_latest
writes it (importing prometheus_client costs a run ~50 ms); prometheus_client is
imported only to push. The file is written to a hidden temp name in the same folder
(not ending in `.prom`, so the collector never reads half a file), fsynced, then
renamed. Every HELP text is a constant, so the same metric name in the three
commands' files never clashes.
"""

import errno
import math
import os
import re

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

_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


class Exposition:
    """One run's gauges: `text()` for the textfile, `collect()` for prometheus_client.

    families: name -> (help, label names, {label values: value}); a sample set twice
    keeps its first place and its last value, as a prometheus_client Gauge does.
    """

    def __init__(self):
        self.families: dict[str, tuple[str, tuple, dict]] = {}

    def set(self, name: str, help_text: str, label_names, labels: dict, value) -> None:
        if name not in self.families:
            if not _METRIC_NAME.fullmatch(name) or not all(_LABEL_NAME.fullmatch(n) for n in label_names):
                raise ValueError(f"invalid metric or label name in {name}{tuple(label_names)}")
            self.families[name] = (help_text, tuple(label_names), {})
        _, names, samples = self.families[name]
        if set(labels) != set(names):
            raise ValueError(f"{name}: labels {sorted(labels)} are not {sorted(names)}")
        samples[tuple(str(labels[n]) for n in names)] = float(value)

    def text(self) -> bytes:
        """The text format (version 0.0.4), byte for byte as generate_latest writes it."""
        lines = []
        for name, (help_text, names, samples) in self.families.items():
            help_text = help_text.replace("\\", "\\\\").replace("\n", "\\n")  # no quotes escaped in HELP
            lines.append(f"# HELP {name} {help_text}\n# TYPE {name} gauge\n")
            order = sorted(range(len(names)), key=names.__getitem__)
            for values, value in samples.items():
                labels = ",".join(f'{names[i]}="{_escape(values[i])}"' for i in order)
                lines.append(f"{name}{{{labels}}} {_go_float(value)}\n" if labels else f"{name} {_go_float(value)}\n")
        return "".join(lines).encode()

    def collect(self):
        """The same gauges as prometheus_client metric families (push_to_gateway reads these)."""
        from prometheus_client.core import GaugeMetricFamily

        for name, (help_text, names, samples) in self.families.items():
            family = GaugeMetricFamily(name, help_text, labels=names)
            for values, value in samples.items():
                family.add_metric(values, value)
            yield family


def _escape(value: str) -> str:
    """A label value in the text format: backslash, double quote and newline escaped."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _go_float(value: float) -> str:
    """A sample value as prometheus_client (floatToGoString) writes it: 1.0, 1.8e+09, +Inf."""
    if value == math.inf:
        return "+Inf"
    if value == -math.inf:
        return "-Inf"
    if math.isnan(value):
        return "NaN"
    text = repr(value)
    dot = text.find(".")
    if value > 0 and dot > 6:  # Go switches to an exponent sooner than Python
        mantissa = f"{text[0]}.{text[1:dot]}{text[dot + 1:]}".rstrip("0.")
        return f"{mantissa}e+{dot - 1:02d}"
    return text


def build_registry(command: str, results, finished_at: float, duration_s: float,
                   notifications: dict | None = None) -> Exposition:
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

    exposition = Exposition()
    for name, help_text, label_names, labels, value in samples:
        exposition.set(name, help_text, label_names, labels, value)
    return exposition


def write_textfile(folder: str, command: str, registry: Exposition) -> str:
    """Write `monitor_<command>.prom` atomically; return its path. Raise OSError on failure."""
    if not os.path.isdir(folder):
        code = errno.ENOTDIR if os.path.exists(folder) else errno.ENOENT
        raise OSError(code, os.strerror(code), folder)
    path = os.path.join(folder, f"monitor_{command}.prom")
    atomic_write(path, registry.text(), mode=0o644)
    return path


def push(url: str, command: str, host: str, registry: Exposition, timeout: float = 5.0) -> None:
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
