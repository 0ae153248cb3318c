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
# Tests talk to 127.0.0.1 only: a proxy of the machine running them must not sit in between
# (monitor's own calls honour these, as requests does; tests/test_proxy.py sets them itself).
for _name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
    os.environ.pop(_name, None)
    os.environ.pop(_name.upper(), None)

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


_VALIDATORS: dict = {}


def monitor_json(text: str, **loads) -> dict:
    """The JSON envelope a `monitor` job printed, parsed (`loads`: json.loads' options)
    and validated against the strict JSON Schema of `monitor schema` for its command:
    every test that reads monitor's JSON checks the published contract too."""
    import jsonschema

    from monitor.commands.schema import COMMANDS, envelope_schema

    data = json.loads(text, **loads)
    command = data.get("command") if isinstance(data, dict) else None
    if command not in _VALIDATORS:
        schema = envelope_schema(command if command in COMMANDS else None, strict=True)
        _VALIDATORS[command] = jsonschema.Draft202012Validator(
            schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    _VALIDATORS[command].validate(data)
    return data


@pytest.fixture
def envelope():
    """envelope(completed_process) -> the one JSON object on its stdout (schema-checked)."""
    def parse(proc):
        lines = proc.stdout.splitlines()
        assert len(lines) == 1, proc.stdout
        return monitor_json(lines[0])
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


# --- slow tests: `pytest -m "not slow"` leaves them out ----------------------------------
# Marked here, in one place, rather than test by test: a test is slow when it lives
# in tests/faults/ or in an end-to-end file (`*_e2e.py`), when it starts a real
# component or the `monitor` script through one of these fixtures, or when it is
# one of the few unit tests below that wait out a real timeout or build huge files.
SLOW_FOLDERS = {"faults"}
SLOW_FIXTURES = {
    "run_monitor",                   # the `monitor` script in a subprocess
    "bao", "sealed_bao", "tls_bao",  # an OpenBao dev server (tests/openbao.py)
    "pg", "legacy_url",              # a PostgreSQL server (tests/postgres.py)
    "fleet",                         # Prometheus, node_exporter and OpenBao, monitor runs scraped
}
SLOW_TESTS = {
    # 500 and 2 000 scrapers against bench/async_server.py (issue 14)
    "test_500_endpoints_answering_in_200_ms_get_no_false_latency_warning",
    "test_2000_scrapers_under_an_fd_limit_of_1024_are_all_ok",
    "test_a_slot_wait_is_not_counted_as_latency",
    "test_tls_failures_through_the_loop_read_as_before",  # openssl makes a key
    # `monitor` runs in a subprocess, many times
    "test_flapping_end_to_end_one_flapping_message_then_quiet_then_the_critical_that_stayed",
    "test_a_backup_file_name_that_is_not_utf8_is_alerted_and_printed_escaped_under_any_locale",
    # promtool runs every rule unit test
    "test_rule_unit_tests_pass_promtool_test_rules",
    # archives of 100k+ entries or 200 MB
    "test_a_tar_with_120k_entries_verifies_within_64_mb",
    "test_a_zip_with_200k_entries_verifies_within_64_mb",
    "test_a_200_mb_gzip_of_zeros_verifies_in_bounded_memory",
    # a peer that answers late or never: each waits out a timeout of a second or more
    "test_a_telegram_that_trickles_its_answer_is_cut_at_the_total_deadline",
    "test_trickling_body_ends_within_the_timeout",
    "test_answer_slower_than_critical_latency_is_critical",
    "test_a_slow_answer_alerts_with_its_latency_and_the_threshold_it_crossed_in_seconds",
    "test_vault_that_accepts_but_never_answers_is_critical_within_the_timeout",
    "test_token_check_on_a_vault_that_never_answers_gives_up_within_the_timeout",
    "test_a_replica_that_never_answers_costs_the_timeout_not_more_and_a_huge_answer_is_not_read_whole",
    "test_the_extra_handshake_keeps_within_the_probe_s_timeout_and_its_verdict",
}


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).parent
    for item in items:
        path = Path(item.path)
        if (SLOW_FOLDERS.intersection(path.relative_to(here).parts[:-1]) or path.name.endswith("_e2e.py")
                or SLOW_FIXTURES.intersection(item.fixturenames)
                or getattr(item, "originalname", item.name) in SLOW_TESTS):
            item.add_marker(pytest.mark.slow)
