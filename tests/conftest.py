"""Shared fixtures: run the real `monitor` script in a temporary folder, write configs,
force a verdict through thresholds, and capture the `monitor` logger's records."""

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

# The `monitor` script installed beside the interpreter running the tests (the venv).
MONITOR = str(Path(sys.executable).with_name("monitor"))

# Variables of the operator's shell that would change what a test run sees.
_SCRUBBED = ("MONITOR_CONFIG", "MONITOR_ENV", "MONITOR_LOCK_WAIT", "TELEGRAM_BOT_TOKEN",
             "VAULT_ADDR", "VAULT_TOKEN", "NO_COLOR")

# What `monitor health` checks with no [vault], [[scrapers]] or [[quotas]] (SPEC: Checks).
HOST_CHECKS = {"cpu", "memory", "swap", "load", "disk:/", "inodes:/", "network", "cron"}

_PERCENT_KEYS = ("cpu_percent", "memory_percent", "swap_percent", "inodes_percent")


def _forced(disk_warning: int, disk_critical: int) -> str:
    # Every other threshold is out of reach, so the disk alone decides the verdict.
    lines = ["[system]"]
    lines += [f"{key} = {{ warning = 100, critical = 100 }}" for key in _PERCENT_KEYS]
    lines.append("load_per_cpu = { warning = 1000000, critical = 1000000 }")
    lines.append(f"disk_percent = {{ warning = {disk_warning}, critical = {disk_critical} }}")
    lines.append('network_interfaces = ["lo"]')  # no other interface's drops between two runs
    return "\n".join(lines) + "\n"


VERDICT_CONFIGS = {
    "ok": _forced(100, 100),
    "warning": _forced(0, 100),
    "critical": _forced(0, 0),
}


def clean_env(extra: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED}
    env.update(extra or {})
    return env


@pytest.fixture
def write_config():
    """write_config(folder, text, name="monitor.toml") -> Path of the written file."""
    def write(folder, text, name="monitor.toml"):
        path = Path(folder) / name
        path.write_text(text)
        return path
    return write


@pytest.fixture
def verdict_config():
    """verdict_config("ok" | "warning" | "critical") -> TOML text forcing that verdict."""
    return VERDICT_CONFIGS.__getitem__


def seed_cpu_baseline(state_dir) -> None:
    """Save CPU counters of "zero at boot" so the next run's CPU is the average since boot.

    A run a few milliseconds after another can read close to 100% when the machine
    is busy: the forced verdicts must not depend on that.
    """
    from monitor.checks.procfs import ProcSource

    path = Path(state_dir) / "counters.json"
    path.parent.mkdir(mode=0o700, exist_ok=True)
    try:
        counters = json.loads(path.read_text())
    except (OSError, ValueError):
        counters = {}
    counters["cpu"] = {"boot": ProcSource().boot_time(), "time": 0.0, "total": 0.0, "idle": 0.0}
    path.write_text(json.dumps(counters))


@pytest.fixture
def run_monitor():
    """run_monitor(args, cwd, env=None, config=None) -> CompletedProcess (text).

    `config` is TOML text written to cwd/test.toml and passed with --config after
    the subcommand; `env` adds variables to a scrubbed copy of the environment.
    With `steady_cpu` (the default) cwd/state gets a CPU baseline from boot.
    """
    def run(args, cwd, env=None, config=None, timeout=30, steady_cpu=True):
        args = list(args)
        if steady_cpu:
            seed_cpu_baseline(Path(cwd) / "state")
        if config is not None:
            path = Path(cwd) / "test.toml"
            path.write_text(config)
            args += ["--config", str(path)]
        return subprocess.run([MONITOR, *args], cwd=cwd, env=clean_env(env), capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    return run


@pytest.fixture
def envelope():
    """envelope(completed_process) -> the one JSON object on its stdout."""
    def parse(proc):
        lines = proc.stdout.splitlines()
        assert len(lines) == 1, proc.stdout
        return json.loads(lines[0])
    return parse


class _ListHandler(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records = []

    def emit(self, record):
        self.records.append(record)


@pytest.fixture
def monitor_records():
    """The records sent to the `monitor` logger during the test (it does not propagate)."""
    logger = logging.getLogger("monitor")
    handler = _ListHandler()
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler.records
    logger.removeHandler(handler)
    logger.setLevel(old_level)


def read_log(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


@pytest.fixture
def log_records():
    """log_records(path) -> every JSON record of a log file."""
    return read_log
