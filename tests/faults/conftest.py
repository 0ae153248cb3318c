"""The proving ground's installation: a temporary folder run by the real `monitor` script.

`Install` writes a config whose host checks are all out of reach of their thresholds
(a busy test machine's CPU is silenced, as in test_alerts_e2e) and whose failing check,
when asked for, is a scraper heartbeat file that does not exist: critical without any
network. Runs are real processes; `Install.leaks(secret)` greps everything they printed
or wrote.
"""

import gzip
import html
import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import MONITOR, clean_env, monitor_json, seed_cpu_baseline
from tests.telegram_standin import TelegramStandIn

# Recognisable secrets: any of these strings found anywhere is a leak.
BOT_TOKEN = "987654321:AAsecretSECRETsecretSECRETsecret42"
# OpenBao refuses a chosen token id with a dot ("hvs."): the sweep's dev servers issue this one.
VAULT_TOKEN = "SECRETvaultTOKENsecretVAULT"
API_KEY = "apikey-SECRETapiKEYsecretAPIKEY-77"
SECRETS = {"bot token": BOT_TOKEN, "bot token secret part": BOT_TOKEN.split(":", 1)[1],
           "vault token": VAULT_TOKEN, "API key": API_KEY}
CHAT = "-100777"
HOST_CHECKS = {"cpu", "memory", "swap", "load", "disk:/", "inodes:/", "network", "cron"}

_UNREACHABLE = "{ warning = 100, critical = 100 }"
HOST_SECTION = (
    "[system]\n"
    f"cpu_percent = {_UNREACHABLE}\nmemory_percent = {_UNREACHABLE}\nswap_percent = {_UNREACHABLE}\n"
    f"disk_percent = {_UNREACHABLE}\ninodes_percent = {_UNREACHABLE}\n"
    "load_per_cpu = { warning = 1000000, critical = 1000000 }\n"
    'network_interfaces = ["lo"]\n'
)


class SlowTelegram(TelegramStandIn):
    """The Bot API stand-in, answering each accepted message after `delay` seconds."""

    delay = 0.0

    def _judge(self, payload):
        if self.delay:
            self.closing.wait(self.delay)
        return super()._judge(payload)


class Run:
    """One finished `monitor` process: exit code, outputs, wall time."""

    def __init__(self, args, code, stdout, stderr, seconds):
        self.args, self.code, self.stdout, self.stderr, self.seconds = args, code, stdout, stderr, seconds

    @property
    def data(self) -> dict:
        lines = self.stdout.splitlines()
        assert len(lines) == 1, f"stdout: {self.stdout!r}\nstderr: {self.stderr}"
        return monitor_json(lines[0])

    def __repr__(self):
        return f"Run({self.args}, exit {self.code}, stderr={self.stderr[-2000:]!r})"


class Install:
    """One installation: config, state/, logs/, textfiles/ under `folder`."""

    def __init__(self, folder: Path, telegram: TelegramStandIn | None = None):
        self.folder = Path(folder)
        self.telegram = telegram
        self.state = self.folder / "state"
        self.logs = self.folder / "logs"
        self.textfiles = self.folder / "textfiles"
        self.runs: list[Run] = []
        self.scrapers: list[str] = []    # names of failing (heartbeat-missing) scrapers
        self.system_extra = ""           # more keys of [system]
        self.extra = ""                  # more TOML appended to the config
        self.telegram_extra = ""
        self.alerts = ""
        self.env = {"TELEGRAM_BOT_TOKEN": BOT_TOKEN}
        self.wrapper: list[str] = []     # a command the run is started through (full_disk)
        self.state.mkdir()
        self.silence_cpu()
        seed_cpu_baseline(self.state)

    # --- configuration -------------------------------------------------------------
    def silence_cpu(self):
        silence = {"id": "cpunoise", "pattern": "cpu", "reason": "the test machine may be busy",
                   "created": 0, "until": time.time() + 3600}
        (self.state / "silences.json").write_text(json.dumps({"silences": [silence]}))

    def config_text(self) -> str:
        text = HOST_SECTION + self.system_extra
        for name in self.scrapers:
            text += (f'[[scrapers]]\nname = "{name}"\n'
                     f'heartbeat_file = "{self.folder / "heartbeats" / name}"\n')
        if self.telegram is not None:
            text += (f'[telegram]\nchat_ids = ["{CHAT}"]\napi_url = "{self.telegram.api_url}"\n'
                     f"{self.telegram_extra}\n")
        if self.alerts:
            text += f"[alerts]\n{self.alerts}\n"
        return text + self.extra

    @property
    def config(self) -> Path:
        """monitor.toml, rewritten only when its text changed, and then atomically.

        Runs started earlier may still be reading it: truncating it in place (as
        `write_text` does) let one of twenty simultaneous runs read an empty config.
        """
        path = self.folder / "monitor.toml"
        text = self.config_text()
        if not path.is_file() or path.read_text() != text:
            temporary = path.with_name(f".monitor.toml.{os.getpid()}.tmp")
            temporary.write_text(text)
            os.replace(temporary, path)
        return path

    # --- running -------------------------------------------------------------------
    def command(self, *args) -> list[str]:
        return [*self.wrapper, MONITOR, *args, "--config", str(self.config)]

    def popen(self, *args, env=None, preexec_fn=None) -> subprocess.Popen:
        return subprocess.Popen(self.command(*args), cwd=self.folder, env=clean_env({**self.env, **(env or {})}),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                text=True, preexec_fn=preexec_fn)

    def run(self, *args, env=None, preexec_fn=None, timeout=60) -> Run:
        started = time.monotonic()
        proc = self.popen(*args, env=env, preexec_fn=preexec_fn)
        stdout, stderr = proc.communicate(timeout=timeout)
        run = Run(args, proc.returncode, stdout, stderr, time.monotonic() - started)
        self.runs.append(run)
        return run

    def health(self, *args, **kwargs) -> Run:
        return self.run("health", "--format", "json", *args, **kwargs)

    # --- looking -------------------------------------------------------------------
    def log_lines(self, name="health") -> list[bytes]:
        path = self.logs / f"{name}.log"
        return path.read_bytes().splitlines() if path.is_file() else []

    def files(self):
        """Every regular file the installation wrote (archives decompressed)."""
        for folder in (self.state, self.logs, self.textfiles):
            if not folder.is_dir():
                continue
            for path in folder.rglob("*"):
                if path.is_file() and not path.is_symlink():
                    data = path.read_bytes()
                    yield path, gzip.decompress(data) if path.suffix == ".gz" else data

    def leaks(self, secrets: dict = SECRETS) -> list[str]:
        """Where any of `secrets` shows: run outputs, files under state/, logs/, textfiles/."""
        found = []
        for what, secret in secrets.items():
            for i, run in enumerate(self.runs):
                for stream in ("stdout", "stderr"):
                    if secret in getattr(run, stream):
                        found.append(f"{what} in {' '.join(run.args)} {stream}")
            for path, data in self.files():
                if secret.encode() in data:
                    found.append(f"{what} in {path}")
        return found


# Mount a full tmpfs over FOLDER (its files copied in) in a mount namespace of the run's
# own, then run the command: files can be created there, but nothing written. Every
# write the run makes is through a file it creates or a regular file it checked (a
# planted /dev/full is refused), so a real full filesystem is the way to ENOSPC. The
# mount dies with the process: nothing to clean up, nothing seen outside.
_FULL_DISK = r"""
set -e
dir=$1; mode=$2; shift 2
copy=$(mktemp -d)
mkdir -p "$dir"
cp -a "$dir"/. "$copy"/
mount -t tmpfs -o size=64k,mode="$mode" monitor-full-disk "$dir"
cp -a "$copy"/. "$dir"/
rm -rf "$copy"
cat /dev/zero > "$dir/.filler" 2>/dev/null || true
exec "$@"
"""


def full_disk(folder: Path, mode: str = "0700") -> list[str]:
    """A wrapper for `Install.wrapper`: the run sees `folder` on a full filesystem (ENOSPC)."""
    if not _can_mount():
        pytest.skip("a full filesystem needs a tmpfs mount in a private mount namespace "
                    "(root with CAP_SYS_ADMIN and util-linux unshare)")
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", _FULL_DISK, "sh", str(folder), mode]


_MOUNT_PROBE: list[bool] = []


def _can_mount() -> bool:
    if not _MOUNT_PROBE:
        import shutil

        script = 'd=$(mktemp -d) && mount -t tmpfs probe "$d" && umount "$d" && rmdir "$d"'
        able = os.geteuid() == 0 and shutil.which("unshare") and subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
            capture_output=True, timeout=30).returncode == 0
        _MOUNT_PROBE.append(bool(able))
    return _MOUNT_PROBE[0]


def assert_state_readable(state: Path) -> None:
    """Every state file parses: JSON objects, and JSON lines in the outbox."""
    for path in state.iterdir():
        if path.name.endswith(".json"):
            assert isinstance(json.loads(path.read_bytes()), dict), path
        elif path.name == "outbox.jsonl":
            for line in path.read_bytes().splitlines():
                assert isinstance(json.loads(line), dict), path


@pytest.fixture
def telegram():
    with SlowTelegram() as standin:
        yield standin


@pytest.fixture
def install(tmp_path, telegram):
    return Install(tmp_path, telegram)


_ALERT_LINE = re.compile(r"^• <b>(.*?)</b>", re.MULTILINE)


def delivered_checks(telegram, check_ids) -> set[str]:
    """The check ids, among `check_ids`, that an alert line of an accepted message names."""
    named = {html.unescape(m) for r in telegram.delivered for m in _ALERT_LINE.findall(r.text)}
    return named & set(check_ids)


def no_traceback(run: Run) -> bool:
    return "Traceback" not in run.stderr and "Traceback" not in run.stdout
