"""`monitor health --format nagios` behind a real NRPE: Debian's `nagios-nrpe-server`
on 127.0.0.1, queried by `check_nrpe` (`nagios-nrpe-plugin`), as Nagios or Icinga would.

One daemon serves every case (one start: `make test` stays short). What `check_nrpe`
prints and exits with must be what `monitor` printed and exited with when run
directly, numbers aside (two runs a moment apart measure different CPU and memory).
"""

import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import MONITOR, VERDICT_CONFIGS, clean_env, seed_cpu_baseline
from tests.nagios_grammar import parse_output

NRPE = "/usr/sbin/nrpe"
CHECK_NRPE = "/usr/lib/nagios/plugins/check_nrpe"
REPO = Path(__file__).resolve().parent.parent

INSTALLED = os.path.exists(NRPE) and os.path.exists(CHECK_NRPE)
# Skipped on a developer's machine without them; as root (CI, where `make test` installs them)
# their absence fails the run instead, as the Alertmanager and Prometheus tests do.
pytestmark = pytest.mark.skipif(not INSTALLED and os.geteuid() != 0,
                                reason="nrpe/check_nrpe (Debian nagios-nrpe-server, nagios-nrpe-plugin) not installed")

CASES = {
    "ok": VERDICT_CONFIGS["ok"],
    "warning": VERDICT_CONFIGS["warning"],
    "critical": VERDICT_CONFIGS["critical"],
    "badconfig": "[system]\ncpu_percent = { warning = 10 }\n",  # exit 3, the error as the status line
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _runs_as(user, args) -> bool:
    return subprocess.run(["runuser", "-u", user, "--", *args], capture_output=True, timeout=60).returncode == 0


def _launcher(folder: Path, user: str | None) -> str:
    """The command NRPE runs for `monitor`. As root, NRPE refuses to run as root and
    drops to `nagios`, who may not reach this interpreter (pyenv's lives under /root,
    mode 0700): then Debian's python3 of the same version runs the same installed
    packages and source tree."""
    if user is None or _runs_as(user, [MONITOR, "--version"]):
        return MONITOR
    system = "/usr/bin/python3"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    if not os.path.exists(system) or not _runs_as(user, [system, "-c", f"import sys; assert sys.version[:{len(version)}] == {version!r}"]):
        pytest.skip(f"the nagios user can run neither {MONITOR} nor a Python {version} at {system}")
    path = f"{sysconfig.get_paths()['purelib']}:{sysconfig.get_paths()['platlib']}:{REPO}"
    script = folder / "monitor"
    script.write_text(f'#!/bin/sh\nPYTHONPATH="{path}" exec {system} -m monitor "$@"\n')
    script.chmod(0o755)
    if not _runs_as(user, [str(script), "--version"]):
        # A clone in a folder `nagios` cannot enter (a CI checkout under /root): the same
        # source and packages, copied where it can. Not a skip: the consumer test must run.
        import shutil

        copy = folder / "lib"
        for tree in dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]):
            shutil.copytree(tree, copy, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copytree(REPO / "monitor", copy / "monitor", dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__"))
        script.write_text(f'#!/bin/sh\nPYTHONPATH="{copy}" exec {system} -m monitor "$@"\n')
        subprocess.run(["chmod", "-R", "a+rX", str(copy)], check=True)
        assert _runs_as(user, [str(script), "--version"]), f"the nagios user cannot run monitor from {copy}"
    return str(script)


@pytest.fixture(scope="module")
def nrpe():
    """A running nrpe serving one command per case; yields (port, folder, launcher)."""
    if not INSTALLED:
        pytest.fail(f"{NRPE} or {CHECK_NRPE} not found: `make test` installs nagios-nrpe-server and "
                    "nagios-nrpe-plugin (as root)")
    user = "nagios" if os.geteuid() == 0 else None
    if user:
        try:
            pwd.getpwnam(user)
        except KeyError:
            pytest.fail("no nagios user: the nagios-nrpe-server package creates it")
    folder = Path(tempfile.mkdtemp(prefix="monitor-nrpe-"))  # not pytest's tmp: 0700 under root
    folder.chmod(0o755)
    launcher = _launcher(folder, user)
    port = _free_port()
    lines = [f"server_address=127.0.0.1", f"server_port={port}", "allowed_hosts=127.0.0.1",
             "dont_blame_nrpe=0", "command_timeout=60", f"pid_file={folder}/nrpe.pid"]
    if user:
        lines += [f"nrpe_user={user}", f"nrpe_group={user}"]
    for name, config in CASES.items():
        case = folder / name
        case.mkdir()
        (case / "monitor.toml").write_text(config + f'[paths]\nstate = "{case}/state"\nlogs = "{case}/logs"\n')
        seed_cpu_baseline(case / "state")
        lines.append(f"command[{name}]={launcher} health --format nagios --config {case}/monitor.toml")
    if user:
        subprocess.run(["chown", "-R", f"{user}:{user}", str(folder)], check=True)
    (folder / "nrpe.cfg").write_text("\n".join(lines) + "\n")
    daemon = subprocess.Popen([NRPE, "-c", str(folder / "nrpe.cfg"), "-f"], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        for _ in range(200):  # up to 20 s for the daemon to listen: generous for a busy CI
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert daemon.poll() is None, daemon.stdout.read().decode(errors="replace")
            time.sleep(0.1)
        else:
            pytest.fail("nrpe did not listen")
        yield port, folder, launcher
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)
        shutil.rmtree(folder, ignore_errors=True)


def _check_nrpe(port: int, command: str):
    return subprocess.run([CHECK_NRPE, "-H", "127.0.0.1", "-p", str(port), "-t", "60", "-c", command],
                          capture_output=True, text=True, timeout=90)


def _direct(folder: Path, launcher: str, name: str):
    args = [launcher, "health", "--format", "nagios", "--config", str(folder / name / "monitor.toml")]
    if os.geteuid() == 0:  # as the NRPE command runs: the same user, the same state folder
        args = ["runuser", "-u", "nagios", "--", *args]
    return subprocess.run(args, capture_output=True, text=True, timeout=60, env=clean_env(), cwd="/")


def _shape(text: str) -> str:
    return re.sub(r"-?[0-9]+(\.[0-9]+)?", "N", text)


@pytest.mark.parametrize("name, code, state", [("ok", 0, "OK"), ("warning", 1, "WARNING"),
                                               ("critical", 2, "CRITICAL"), ("badconfig", 3, "UNKNOWN")])
def test_check_nrpe_returns_what_monitor_printed_and_its_exit_code(nrpe, name, code, state):
    port, folder, launcher = nrpe
    through = _check_nrpe(port, name)
    direct = _direct(folder, launcher, name)
    assert (through.returncode, direct.returncode) == (code, code), (through.stdout, direct.stderr)
    assert _shape(through.stdout) == _shape(direct.stdout), (through.stdout, direct.stdout)
    out = parse_output(through.stdout.rstrip("\n"))
    assert out.status_line.startswith(f"MONITOR {state} - ")
    if name == "badconfig":
        assert out.status_line == "MONITOR UNKNOWN - config error: system.cpu_percent.critical: required"
        return
    labels = {d.label for d in out.perfdata}
    assert {"cpu", "memory", "swap", "load", "disk:/", "inodes:/"} <= labels
    disk = next(d for d in out.perfdata if d.label == "disk:/")
    assert disk.uom == "%" and (disk.min, disk.max) == (0, 100)
    if name != "ok":
        assert out.long_lines[0].startswith(f"{state} disk:/: ")
