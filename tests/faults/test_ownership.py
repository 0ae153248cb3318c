"""Issue #12 items 3 and 4: a root run among folders others can write, and mixed users.

3. Like sshd's StrictModes, a root run refuses a state or logs folder that its group or
   others can write, or that sits below a folder others can write that is not a
   root-owned sticky one (/tmp is fine): one stderr line naming the folder, its mode and
   owner, `*_write_error` in the JSON, the checks and the alert still go out, and nothing
   is read from or written to the refused folder. `config check` says the same, exit 1.
4. A root run creates state/ and logs/ for the config file's owner, hands the files it
   writes there to that owner, and a later run as that user keeps its lock, state, logs.

Runs as root (as CI does): the rules only apply to root, and item 4 switches users.
"""

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import clean_env
from tests.faults.conftest import Install, Run, delivered_checks, no_traceback

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the folder rules apply to root runs; "
                                "item 4 switches to another user (CI runs the suite as root)")

NOBODY = 65534  # nobody:nogroup on Debian


def _said(run, key):
    """The stderr lines saying `key` (e.g. 'state write error')."""
    return [line for line in run.stderr.splitlines() if line.startswith(f"monitor health: {key}: ")]


def _silence_everything(state: Path):
    """A silences.json muting every check: whoever planted it must not mute a root run."""
    (state / "silences.json").write_text(json.dumps({"silences": [
        {"id": "planted", "pattern": "*", "reason": "planted", "created": 0, "until": 4102444800}]}))


@pytest.mark.parametrize("mode,by", [(0o777, "its group and others"), (0o770, "its group"),
                                     (0o702, "others")], ids=["0777", "0770", "0702"])
def test_a_root_run_refuses_a_state_folder_others_can_write_yet_checks_and_alerts_go_on(
        install, telegram, mode, by):
    install.scrapers = ["feed"]                  # critical: heartbeat file missing
    _silence_everything(install.state)           # planted by whoever can write the folder
    before = sorted(p.name for p in install.state.iterdir())
    install.state.chmod(mode)

    run = install.health()

    assert run.code == 2, run
    said = _said(run, "state write error")
    assert len(said) == 1, run.stderr
    assert str(install.state) in said[0] and f"mode {mode:04o}" in said[0] and "owner root" in said[0] \
        and f"writable by {by}" in said[0], said[0]
    assert "refusing" in run.data["state_write_error"]
    assert no_traceback(run)
    # The alert goes out, the planted silence notwithstanding: nothing was read there...
    assert delivered_checks(telegram, ["scraper:feed"]) == {"scraper:feed"}
    # ...and nothing was written there (no lock, no alert state, no counters).
    assert sorted(p.name for p in install.state.iterdir()) == before
    # The log says it too.
    assert any(b'"scraper:feed"' in line for line in install.log_lines())


def test_a_root_run_refuses_a_logs_folder_its_group_can_write(install, telegram):
    install.scrapers = ["feed"]
    install.logs.mkdir()
    install.logs.chmod(0o775)

    run = install.health()

    assert run.code == 2, run
    said = _said(run, "log write error")
    assert len(said) == 1 and str(install.logs) in said[0] and "mode 0775" in said[0], run.stderr
    assert "log_write_error" in run.data and "state_write_error" not in run.data
    assert list(install.logs.iterdir()) == []           # no log file opened in it
    assert delivered_checks(telegram, ["scraper:feed"]) == {"scraper:feed"}


def test_a_parent_others_can_write_is_refused_but_a_root_owned_sticky_one_like_tmp_is_fine(install, telegram):
    shared = install.folder / "shared"
    shared.mkdir()
    shared.chmod(0o777)                                  # anyone could rename state/ away
    install.extra += f'[paths]\nstate = "{shared / "state"}"\nlogs = "{shared / "logs"}"\n'

    run = install.health()

    assert run.code >= 1, run
    for key in ("state write error", "log write error"):
        said = _said(run, key)
        assert len(said) == 1 and f"the folder above it, {shared}, is writable by others" in said[0] \
            and "mode 0777" in said[0], run.stderr
    assert list(shared.iterdir()) == []                  # nothing created below it

    shared.chmod(0o1777)                                 # root-owned and sticky, as /tmp
    run = install.health()

    assert "state_write_error" not in run.data and "log_write_error" not in run.data, run
    assert (shared / "state" / "health.lock").is_file() and install_log(shared / "logs")


def install_log(folder: Path) -> bool:
    return (folder / "health.log").is_file()


def test_config_check_reports_the_folders_a_root_run_would_refuse(install, telegram):
    install.state.chmod(0o775)
    install.logs.mkdir()

    run = install.run("config", "check", "--format", "json")

    assert run.code == 1, run
    lines = [line for line in run.stderr.splitlines() if line.startswith("paths.")]
    assert len(lines) == 1 and lines[0].startswith(f"paths.state: refusing {install.state}: writable by its group") \
        and "mode 0775" in lines[0], run.stderr
    assert no_traceback(run)

    install.state.chmod(0o700)
    assert install.run("config", "check", "--format", "json").code == 0


# --- item 4: mixed users ---------------------------------------------------------------

@pytest.fixture
def service_install(telegram):
    """An installation in a folder `nobody` can reach (pytest's tmp_path is root's 0700)."""
    folder = Path(tempfile.mkdtemp(prefix="monitor-owners-", dir="/tmp"))
    folder.chmod(0o755)
    inst = Install(folder, telegram)
    shutil.rmtree(inst.state)                            # the first (root) run creates it
    os.chown(inst.config, NOBODY, NOBODY)                # the service user's (until rewritten)
    yield inst
    shutil.rmtree(folder, ignore_errors=True)


def _health_as_nobody(inst) -> Run:
    """`monitor health` as nobody (util-linux setpriv: a preexec_fn's setuid made this
    sandbox refuse to exec the venv's interpreter, which setpriv's does not)."""
    args = ("health", "--format", "json")
    started = time.monotonic()
    proc = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                           *inst.command(*args)], cwd=inst.folder, env=clean_env(inst.env),
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)
    run = Run(args, proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started)
    inst.runs.append(run)
    return run


def _owners(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.stat().st_uid, p.stat().st_gid)
            for p in [folder, *folder.rglob("*")]}


def test_a_root_run_creates_state_and_logs_for_the_config_owner_who_can_then_run(service_install):
    inst = service_install

    first = inst.health()                                # e.g. `sudo monitor health` by an operator

    assert "state_write_error" not in first.data and "log_write_error" not in first.data, first
    for folder in (inst.state, inst.logs):
        owners = _owners(folder)
        assert set(owners.values()) == {(NOBODY, NOBODY)}, owners
    assert {"health.lock", "alerts.json", "counters.json"} <= {p.name for p in inst.state.iterdir()}
    counters = (inst.state / "counters.json").read_bytes()

    for user in ("nobody", "root", "nobody"):
        run = _health_as_nobody(inst) if user == "nobody" else inst.health()
        assert run.code in (0, 1, 2), (user, run)
        assert "state_write_error" not in run.data and "log_write_error" not in run.data, (user, run)
        assert no_traceback(run)
        assert set(_owners(inst.state).values()) == {(NOBODY, NOBODY)}, (user, _owners(inst.state))
    # The service user's runs took the lock and wrote their state and logs.
    assert (inst.state / "counters.json").read_bytes() != counters
    runs = [json.loads(line) for line in inst.log_lines() if b'"event": "run"' in line]
    assert len(runs) == 4, inst.log_lines()


def test_a_hard_link_or_symlink_planted_in_the_service_users_folder_is_not_handed_over(service_install):
    inst = service_install
    assert inst.health().code in (0, 1, 2)               # creates state/ for nobody
    private = Path(tempfile.mkdtemp(dir="/tmp"))         # root's 0700 folder, same filesystem
    try:
        secret = private / "shadow"
        secret.write_text("root's\n")
        secret.chmod(0o600)
        os.link(secret, inst.state / "alerts.json.old")  # as with protected_hardlinks=0
        (inst.state / "link.json").symlink_to(secret)

        run = inst.health()

        assert "state_write_error" not in run.data, run
        assert (inst.state / "alerts.json").stat().st_uid == NOBODY   # root's own files are handed over
        assert (secret.stat().st_uid, secret.stat().st_gid) == (0, 0)
        assert os.lstat(inst.state / "link.json").st_uid == 0
    finally:
        shutil.rmtree(private)


def test_with_a_root_owned_config_state_and_logs_are_created_for_the_owner_of_the_folder_above(service_install):
    """README's service-user setup: /etc/monitor/monitor.toml root's, /var/lib/monitor `monitor`'s."""
    inst = service_install
    var = inst.folder / "var"
    var.mkdir(mode=0o750)
    os.chown(var, NOBODY, NOBODY)
    inst.extra += f'[paths]\nstate = "{var / "state"}"\nlogs = "{var / "logs"}"\n'
    os.chown(inst.config, 0, 0)                          # rewritten: root's, readable by all

    first = inst.health()

    assert "state_write_error" not in first.data and "log_write_error" not in first.data, first
    assert set(_owners(var).values()) == {(NOBODY, NOBODY)}, _owners(var)
    run = _health_as_nobody(inst)
    assert "state_write_error" not in run.data and "log_write_error" not in run.data, run
    assert len([line for line in (var / "logs" / "health.log").read_bytes().splitlines()
                if b'"event": "run"' in line]) == 2


def test_with_the_state_folder_refused_an_alert_telegram_refuses_is_dropped_with_an_error_naming_it(
        install, telegram):
    from tests.telegram_standin import server_error

    install.scrapers = ["feed"]
    install.state.chmod(0o777)
    telegram.always(server_error())

    run = install.health()

    assert run.code == 2 and "refusing" in run.data["state_write_error"], run
    assert run.data["notifications"]["failed"] >= 1 and run.data["notifications"]["outbox"] is None
    dropped = [json.loads(line) for line in install.log_lines() if b'"outbox_dropped"' in line]
    assert len(dropped) == 1 and str(install.state) in dropped[0]["message"] \
        and "refused" in dropped[0]["message"] and "scraper:feed" in dropped[0]["message"] \
        and dropped[0]["levelname"] == "ERROR", dropped
    assert not (install.state / "outbox.jsonl").exists()
    assert no_traceback(run)


def test_a_silence_added_with_sudo_is_handed_to_the_service_user_whose_runs_then_read_it(service_install):
    inst = service_install
    assert "state_write_error" not in inst.health().data   # state/ created for nobody

    added = inst.run("silence", "add", "scraper:*", "--for", "1h", "--reason", "maintenance")   # as root

    assert added.code == 0, added
    assert (inst.state / "silences.json").stat().st_uid == NOBODY
    inst.scrapers = ["feed"]                             # now critical...
    os.chown(inst.config, NOBODY, NOBODY)                # (the config was rewritten)
    run = _health_as_nobody(inst)
    assert "state_write_error" not in run.data, run
    assert run.data["notifications"]["silenced"] == 1, run.data["notifications"]   # ...and silenced
