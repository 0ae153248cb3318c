"""Disk full and write failures: the checks still run and the alert still goes out.

Each fault hits one of the three places a run writes (SPEC: Failure behaviour, "Logs
or state that cannot be written (disk full, read-only) do not stop the checks or the
alerts"):
- a full filesystem: a full tmpfs over the folder, mounted in the run's own mount
  namespace (`full_disk`; a /dev/full planted where the run writes is refused, and
  temp file names are unguessable): ENOSPC;
- a file where the folder should be: ENOTDIR;
- RLIMIT_FSIZE of 0 bytes (SIGXFSZ ignored): EFBIG on every file at once.
Root ignores permissions, so no test here relies on chmod. The textfile folder comes
from `prometheus.textfile_dir`: `--textfile-dir` naming a file is refused by click as a
usage error before any check runs (exit 3; reported to the CLI's owner).
"""

import json
import os
import resource
import signal

import pytest

from tests.faults.conftest import HOST_CHECKS, delivered_checks, full_disk, no_traceback

NO_SPACE = os.strerror(28)      # ENOSPC
NOT_A_FOLDER = "not a directory"
TOO_LARGE = os.strerror(27)     # EFBIG


def _file_size_limit():
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the first write over the limit kills
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))


def _logs_full(inst):
    inst.wrapper = full_disk(inst.logs, "0750")
    return None, {"log_write_error": ("health.log", NO_SPACE)}


def _logs_not_a_folder(inst):
    inst.logs.write_text("a file where the logs folder should be\n")
    return None, {"log_write_error": ("logs", NOT_A_FOLDER)}


def _state_full(inst):
    inst.wrapper = full_disk(inst.state)  # every state write is a new temp file renamed over NAME
    return None, {"state_write_error": ("state", NO_SPACE)}


def _state_not_a_folder(inst):
    for path in inst.state.iterdir():
        path.unlink()
    inst.state.rmdir()
    inst.state.write_text("a file where the state folder should be\n")
    return None, {"state_write_error": ("state", NOT_A_FOLDER)}


def _textfile_full(inst):
    inst.wrapper = full_disk(inst.textfiles, "0755")
    return None, {"textfile_write_error": ("textfiles", NO_SPACE)}


def _textfile_not_a_folder(inst):
    inst.textfiles.write_text("a file where the textfile folder should be\n")
    # prometheus.write_textfile says "No such directory" for a file in the way.
    return None, {"textfile_write_error": ("textfiles", "directory")}


def _file_size_limit_everywhere(inst):
    inst.textfiles.mkdir()
    return _file_size_limit, {"log_write_error": ("health.log", TOO_LARGE),
                              "state_write_error": ("state", TOO_LARGE),
                              "textfile_write_error": ("textfiles", TOO_LARGE)}


FAULTS = {
    "logs on a full disk": _logs_full,
    "logs folder is a file": _logs_not_a_folder,
    "state on a full disk": _state_full,
    "state folder is a file": _state_not_a_folder,
    "textfile folder on a full disk": _textfile_full,
    "textfile folder is a file": _textfile_not_a_folder,
    "file size limit (EFBIG)": _file_size_limit_everywhere,
}


def _says_what_failed(run, expected: dict):
    lines = run.stderr.splitlines()
    for key, (where, reason) in expected.items():
        said = [line for line in lines if line.startswith(f"monitor health: {key.replace('_', ' ')}: ")]
        assert len(said) == 1, (key, run.stderr)
        assert where in said[0] and reason.lower() in said[0].lower(), said[0]
        assert key in run.data and reason.lower() in run.data[key].lower(), run.data.get(key)
    assert no_traceback(run), run.stderr


@pytest.mark.parametrize("fault", FAULTS)
def test_a_write_failure_does_not_stop_the_checks_nor_the_alert(install, telegram, fault):
    install.scrapers = ["feed"]                        # critical: heartbeat file missing
    preexec_fn, expected = FAULTS[fault](install)
    install.extra += f'[prometheus]\ntextfile_dir = "{install.textfiles}"\n'
    run = install.health(preexec_fn=preexec_fn)

    assert run.code == 2, run
    data = run.data
    assert set(data["checks"]) == HOST_CHECKS | {"scraper:feed"}
    assert data["checks"]["scraper:feed"]["status"] == "critical"
    assert delivered_checks(telegram, ["scraper:feed"]) == {"scraper:feed"}, "the alert did not go out"
    assert data["notifications"]["sent"] == 1
    _says_what_failed(run, expected)


@pytest.mark.parametrize("fault", FAULTS)
def test_a_write_failure_alone_makes_an_ok_run_exit_1(install, telegram, fault):
    install.scrapers = []
    install.extra = (f'[[scrapers]]\nname = "feed"\nheartbeat_file = "{install.config}"\n'
                     'heartbeat_max_age = "1h"\n')  # fresh: ok
    preexec_fn, expected = FAULTS[fault](install)
    install.extra += f'[prometheus]\ntextfile_dir = "{install.textfiles}"\n'
    run = install.health("--only", "scraper", preexec_fn=preexec_fn)

    assert run.data["overall_status"] == "ok"
    assert run.code == 1, run
    assert telegram.received == []
    _says_what_failed(run, expected)


def test_a_record_the_disk_cut_short_is_taken_back_so_every_log_line_stays_whole_json(install, telegram):
    install.scrapers = ["feed"]
    install.health()
    log = install.logs / "health.log"
    room = log.stat().st_size + 100     # room for part of the next run's records, not all

    def little_room():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (room, room))

    cut = install.health(preexec_fn=little_room)
    assert cut.code == 2 and TOO_LARGE in cut.data["log_write_error"]
    assert log.read_bytes().endswith(b"\n") and log.stat().st_size <= room
    install.health()                    # room again: records go on, each on its own line
    lines = install.log_lines()
    assert [json.loads(line)["event"] for line in lines].count("run") >= 2
