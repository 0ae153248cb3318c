"""Host checks (kind `system`): CPU, memory, swap, load, network; disk and inodes in `disks.py`.

Each function measures, then judges with the shared `measured`. CPU and network
are rates: they compare the kernel's counters with those saved by earlier runs
(`state.Carried`; since boot when there are none), so no check ever sleeps. Counters come in through
the `source` argument (psutil's API: `procfs.ProcSource` on Linux, psutil elsewhere)
so tests can feed fake counters.
"""

import os
import time
from functools import partial

from monitor.checks import disks
from monitor.checks.disks import disk, inodes  # noqa: F401 (here before disks.py had them)
from monitor.checks.procfs import fstab_mount_points, host_source, mount_points  # noqa: F401
from monitor.results import OK, WARNING, Result, Threshold, is_number, measured
from monitor.runner import Check
from monitor.state import Carried
from monitor.units import format_duration, format_size

# Below this span network counters are too coarse for a rate, so the previous
# baseline is kept and the next run averages over more time.
MIN_SPAN_SECONDS = 1.0
# CPU: the window starts at the newest saved sample at least this old (system.cpu_min_span).
CPU_MIN_SPAN_SECONDS = 10.0
CPU_MAX_SAMPLES = 6


def _default_source():
    return host_source()


def _cpu_point(times) -> tuple[float, float]:
    # psutil's own cpu_percent does the same: guest time is already counted in
    # user/nice on Linux, and iowait is idle time for our purpose.
    total = sum(times) - getattr(times, "guest", 0) - getattr(times, "guest_nice", 0)
    idle = times.idle + getattr(times, "iowait", 0)
    return total, idle


def _own_cpu() -> float:
    """CPU seconds this process (every thread, interpreter start-up included) has used."""
    times = os.times()
    return times.user + times.system


def _cpu_samples(saved, boot: float, now: float) -> list[dict]:
    """The CPU samples saved by earlier runs of this boot, oldest first, garbled ones left out.

    Reads both shapes: `{"boot", "samples": [{"time", "total", "idle", "monitor"}, ...]}` and
    the single sample older versions saved, `{"boot", "time", "total", "idle"}` (no
    `monitor`: counted as 0). Samples from another boot or "after" now are dropped.
    """
    if not isinstance(saved, dict) or saved.get("boot") != boot:
        return []
    raw = saved.get("samples") if "samples" in saved else [saved]
    if not isinstance(raw, list):
        return []
    samples = []
    for item in raw[-CPU_MAX_SAMPLES:]:
        if not isinstance(item, dict):
            continue
        sample = {"time": item.get("time"), "total": item.get("total"), "idle": item.get("idle"),
                  "monitor": item.get("monitor", 0.0)}
        if all(is_number(v) for v in sample.values()) and sample["time"] <= now:
            samples.append(sample)
    samples.sort(key=lambda s: s["time"])
    return samples


def _cpu_baseline(samples: list[dict], now: float, min_span: float) -> dict | None:
    """The newest sample at least `min_span` old, else the oldest there is."""
    old_enough = [s for s in samples if now - s["time"] >= min_span]
    if old_enough:
        return old_enough[-1]
    return samples[0] if samples else None


def cpu(threshold: Threshold, counters: Carried, source=None, min_span: float = CPU_MIN_SPAN_SECONDS,
        own_cpu=None, wall=time.time, sleep=None) -> Result:
    """CPU busy percent of everything but monitor itself, over the longest sensible window.

    The window starts at the newest saved sample at least `min_span` old (else the
    oldest one); every run appends a sample. The CPU monitor used inside the window
    is left out of the busy time: this run's own (`own_cpu`, from process start: the
    interpreter's start-up falls inside the window too) and that of the earlier runs
    since the baseline, carried as a running `monitor` total in the samples. With no
    usable sample (first run, reboot, counters reset) the window is since boot: the
    kernel's counters start at zero then, so nothing is slept (`sleep` is accepted for
    callers of earlier versions and never called).

    `own_cpu` defaults to the source's `process_cpu` (`ProcSource`), or this process's
    `os.times()` when the source is psutil itself; a source that is neither (a test's
    fake host) did not count this process, so nothing is left out.
    """
    ps = source or _default_source()
    if own_cpu is None:
        own_cpu = getattr(ps, "process_cpu", None) or (
            _own_cpu if getattr(ps, "__name__", "") == "psutil" else (lambda: 0.0))
    boot, now = ps.boot_time(), counters.clock()
    total, idle = _cpu_point(ps.cpu_times())
    own = max(0.0, own_cpu())
    samples = _cpu_samples(counters.previous.get("cpu"), boot, now)
    base = _cpu_baseline(samples, now, min_span)
    if base is not None and total <= base["total"]:
        base, samples = None, []  # counters went backwards: not this boot's, whatever it says
    # (idle alone may step back a little: the kernel's iowait does; the percent is clamped)
    mark = (samples[-1]["monitor"] if samples else 0.0) + own  # monitor's CPU since boot, as known
    if base is not None:
        window, busy = total - base["total"], (total - idle) - (base["total"] - base["idle"])
        mine = max(0.0, mark - base["monitor"])
        span = now - base["time"]
        how = f"avg over {format_duration(span)}"
        keep = [s for s in samples if s["time"] >= base["time"]]
    else:
        window, busy, mine = total, total - idle, own
        span = max(0.0, wall() - boot)
        how = f"avg since boot {format_duration(span)} ago: no earlier sample"
        keep = []
    percent = round(min(100.0, max(0.0, 100.0 * (busy - mine) / window)), 1) if window > 0 else 0.0
    keep.append({"time": now, "total": total, "idle": idle, "monitor": round(mark, 3)})
    if len(keep) > CPU_MAX_SAMPLES:  # a burst of runs: keep the baseline and the newest
        keep = keep[:1] + keep[-(CPU_MAX_SAMPLES - 1):]
    counters.save("cpu", {"boot": boot, "samples": keep})
    return measured(percent, threshold, f"CPU {percent:.1f}% ({how}, monitor's own {mine:.2f}s left out)",
                    details={"span_seconds": round(span, 3), "monitor_cpu_seconds": round(mine, 3)})


def memory(threshold: Threshold, source=None) -> Result:
    mem = (source or _default_source()).virtual_memory()
    used = mem.total - mem.available
    return measured(round(mem.percent, 1), threshold,
                    f"Memory {mem.percent:.1f}% used ({format_size(used)} of {format_size(mem.total)})",
                    details={"total_bytes": mem.total, "available_bytes": mem.available})


def swap(threshold: Threshold, source=None) -> Result:
    sw = (source or _default_source()).swap_memory()
    if not sw.total:
        return Result(OK, "no swap configured", value=0.0, unit="%", warning=threshold.warning,
                      critical=threshold.critical, details={"total_bytes": 0})
    return measured(round(sw.percent, 1), threshold,
                    f"Swap {sw.percent:.1f}% used ({format_size(sw.used)} of {format_size(sw.total)})",
                    details={"total_bytes": sw.total, "used_bytes": sw.used})


def load(threshold: Threshold, getloadavg=os.getloadavg, cpu_count=os.cpu_count) -> Result:
    """The 5-minute load average divided by the number of CPUs."""
    cpus = cpu_count() or 1
    one, five, fifteen = getloadavg()
    per_cpu = round(five / cpus, 2)
    return measured(per_cpu, threshold, f"Load {per_cpu:.2f} per CPU (5-min {five:.2f} on {cpus} CPUs)",
                    unit="per CPU", details={"load1": one, "load5": five, "load15": fifteen, "cpus": cpus})


_NET_FIELDS = ("bytes_sent", "bytes_recv", "errin", "errout", "dropin", "dropout")


def network(interfaces: list[str], counters: Carried, source=None) -> Result:
    """Bytes per second per interface since the previous run; new errors or drops warn."""
    ps = source or _default_source()
    boot, now = ps.boot_time(), counters.clock()
    stats = ps.net_io_counters(pernic=True)
    names = interfaces or sorted(n for n in stats if not n.startswith("lo"))
    missing = [n for n in interfaces if n not in stats]
    current = {n: [getattr(stats[n], f) for f in _NET_FIELDS] for n in names if n in stats}
    prev = counters.baseline("net", boot, now)
    span = now - prev["time"] if prev else 0.0
    if not prev or span >= MIN_SPAN_SECONDS:
        counters.save("net", {"boot": boot, "time": now, "nics": current})

    status, problems, details, total_rate = OK, [], {}, None
    if missing:
        status = WARNING
        problems.append(f"interface {', '.join(missing)} not found")
    if not prev or span < MIN_SPAN_SECONDS:
        # Bytes over a few milliseconds make absurd rates (infinite at a zero span).
        message = (f"previous run {format_duration(span)} ago; rates from the next run" if prev
                   else "baseline saved; rates from the next run")
        details = {n: {} for n in current}
    else:
        total_rate = 0.0
        for name, now_values in current.items():
            old = prev.get("nics").get(name) if isinstance(prev.get("nics"), dict) else None
            if not isinstance(old, list) or len(old) != len(_NET_FIELDS) or not all(map(is_number, old)) or any(
                    n < o for n, o in zip(now_values, old)):
                details[name] = {"note": "counters reset; rates from the next run"}
                continue
            delta = dict(zip(_NET_FIELDS, (n - o for n, o in zip(now_values, old))))
            rx, tx = delta["bytes_recv"] / span, delta["bytes_sent"] / span
            total_rate += rx + tx
            errors = {k: delta[k] for k in _NET_FIELDS[2:] if delta[k]}
            details[name] = {"rx_bytes_per_second": round(rx, 1), "tx_bytes_per_second": round(tx, 1),
                             **{f"new_{k}": v for k, v in errors.items()}}
            if errors:
                status = WARNING
                problems.append(f"{name}: " + ", ".join(f"{v} new {k}" for k, v in errors.items()))
        total_rate = round(total_rate, 1)
        message = f"{format_size(total_rate)}/s over {len(current)} interface(s) in {format_duration(span)}"
    if problems:
        message = "; ".join(problems) + f" ({message})"
    return Result(status, message, value=total_rate, unit="B/s", details=details)



# --- what these checks export (the contract: monitor/checks/__init__.py) ----------------------

METRICS = {
    "monitor_cpu_usage_percent": ("CPU busy percent since the previous health run.", ()),
    "monitor_memory_usage_percent": ("Memory used percent.", ()),
}
MEASURES = {"cpu": ("CPU", False), "memory": ("memory", False), "swap": ("swap", False),
            "load": ("load", False)}


def checks(config: dict, carried: Carried, shared=None) -> list:
    """The host checks of `monitor health`: one each, and a disk and an inodes check per path (`disks.py`)."""
    cfg = config["system"]
    timeout, source = cfg["timeout"], host_source()
    found = [
        Check("cpu", "system", partial(cpu, cfg["cpu_percent"], carried, source, cfg["cpu_min_span"]), timeout),
        Check("memory", "system", partial(memory, cfg["memory_percent"], source), timeout),
        Check("swap", "system", partial(swap, cfg["swap_percent"], source), timeout),
        Check("load", "system", partial(load, cfg["load_per_cpu"]), timeout),
    ]
    found += disks.path_checks(config, carried)
    found.append(Check("network", "system", partial(network, cfg["network_interfaces"], carried, source), timeout))
    return found


def check_ids(config: dict) -> list[str]:
    return ["cpu", "memory", "swap", "load", "network"]


def samples(result) -> list:
    if result.id == "cpu":
        return [("monitor_cpu_usage_percent", {}, result.value)]
    if result.id == "memory":
        return [("monitor_memory_usage_percent", {}, result.value)]
    return []


def levels(config: dict) -> dict:
    from monitor.fleet.kit import levels_of

    system = config["system"]
    return {"cpu": levels_of(system["cpu_percent"]), "memory": levels_of(system["memory_percent"]),
            "swap": levels_of(system["swap_percent"]), "load": levels_of(system["load_per_cpu"])}


def rules(t: dict) -> dict:
    from monitor.fleet.kit import health_runbook, num, pair

    runbook = health_runbook("system")
    rules = []
    for alert, name, metric, fors, shown, text in (
        ("HostCpuHigh", "cpu", "monitor_cpu_usage_percent", ("10m", "5m"),
         '{{ $value | printf "%.0f" }}%', "CPU"),
        ("HostMemoryHigh", "memory", "monitor_memory_usage_percent", ("10m", "5m"),
         '{{ $value | printf "%.0f" }}%', "Memory"),
        ("HostSwapHigh", "swap", 'monitor_check_value{kind="system",check="swap"}', ("15m", "10m"),
         '{{ $value | printf "%.0f" }}%', "Swap"),
        ("HostLoadHigh", "load", 'monitor_check_value{kind="system",check="load"}', ("15m", "10m"),
         '{{ $value | printf "%.2f" }}', "Load per CPU"),
    ):  # the disk and inode rules follow in this group (disks.py)
        levels = t[name]
        unit = "" if name == "load" else "%"
        rules += pair(
            alert, lambda level, metric=metric: f"{metric} >= {num(level)}", levels, fors,
            text + (" high" if name == "load" else " usage high") + " (SEVERITY)",
            f"{text} at {shown} on {{{{ $labels.instance }}}} "
            f"(warning from {num(levels.warning)}{unit}, critical from {num(levels.critical)}{unit}).",
            runbook)
    return {"monitor_host": rules}


def panels(t: dict) -> list:
    from monitor.fleet.kit import INSTANCE as I, higher_worse, panel, target

    row = "System Health"
    out = []
    for title, expr, key, desc in (
        ("CPU busy %", f"monitor_cpu_usage_percent{{{I}}}", "cpu",
         "Average since the previous health run (system.cpu_percent)."),
        ("Memory used %", f"monitor_memory_usage_percent{{{I}}}", "memory",
         "(total - available) / total (system.memory_percent)."),
        ("Disk used %", f"monitor_disk_usage_percent{{{I}}}", "disk",
         "As df counts it, for each of system.disk_paths (system.disk_percent)."),
    ):
        legend = "{{instance}} {{path}}" if key == "disk" else "{{instance}}"
        out.append((row, panel("timeseries", title, [target(expr, legend)], desc, "percent",
                               higher_worse(t[key]), 0, 100), 8, 8))
    out.append((row, panel("timeseries", "Inodes used %",
                           [target(f'monitor_check_value{{{I},kind="system",check=~"inodes:.*"}}',
                                   "{{instance}} {{check}}")],
                           "For each of system.disk_paths (system.inodes_percent).", "percent",
                           higher_worse(t["inodes"]), 0, 100), 6, 8))
    out.append((row, panel("timeseries", "Swap used %",
                           [target(f'monitor_check_value{{{I},kind="system",check="swap"}}')],
                           "system.swap_percent.", "percent", higher_worse(t["swap"]), 0, 100), 6, 8))
    out.append((row, panel("timeseries", "Load per CPU (5 min)",
                           [target(f'monitor_check_value{{{I},kind="system",check="load"}}')],
                           "5-minute load average divided by the CPU count (system.load_per_cpu).", "none",
                           higher_worse(t["load"]), 0), 6, 8))
    out.append((row, panel("timeseries", "Network throughput",
                           [target(f'monitor_check_value{{{I},kind="system",check="network"}}')],
                           "Bytes per second, in and out, over system.network_interfaces, since the previous run.",
                           "Bps", minimum=0), 6, 8))
    return out
