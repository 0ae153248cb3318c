"""Permissions: what a run writes is private whatever the umask; exposed secrets draw a warning.

Runs happen under umask 000 (cron and systemd set their own; an operator's shell may
have anything): state files must still be 0600 in a 0700 folder, logs and their
archives 0640 in 0750 folders, even while an archive is being written. The
Prometheus textfile is 0644 on purpose: node_exporter, another user, reads it.
"""

import gzip
import json
import os
import stat
from datetime import date, timedelta

from monitor import config as config_mod
from monitor import logs
from tests.faults.conftest import BOT_TOKEN
from tests.telegram_standin import unauthorized

YESTERDAY = (date.today() - timedelta(days=1)).isoformat()


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _umask_0():
    os.umask(0)


def test_state_and_log_files_are_private_even_under_umask_000(install, telegram):
    for path in install.state.iterdir():  # what the test itself wrote: let monitor write it all
        path.unlink()
    install.state.rmdir()
    install.scrapers = ["feed"]                 # critical: an alert to keep
    install.extra = f'[prometheus]\ntextfile_dir = "{install.textfiles}"\n'
    install.textfiles.mkdir()
    install.logs.mkdir(mode=0o750)
    old = {"asctime": f"{YESTERDAY}T12:00:00.000+00:00", "levelname": "INFO", "message": "yesterday"}
    (install.logs / "health.log").write_text(json.dumps(old) + "\n")   # archived by the run
    os.chmod(install.logs / "health.log", 0o640)
    telegram.always(unauthorized())             # the alert waits in the outbox

    silence = install.run("silence", "add", "cpu", "--for", "1h", preexec_fn=_umask_0)
    assert silence.code == 0, silence
    run = install.health(preexec_fn=_umask_0)
    assert run.code == 2 and run.data["notifications"]["queued"] == 1, run

    assert _mode(install.state) == 0o700
    written = {p.name: _mode(p) for p in install.state.iterdir()}
    assert {"alerts.json", "counters.json", "outbox.jsonl", "silences.json", "health.lock",
            "notify.lock"} <= set(written)
    assert {name: mode for name, mode in written.items() if mode != 0o600} == {}
    assert _mode(install.logs / "health.log") == 0o640
    (archive,) = (install.logs / "archive").iterdir()
    assert archive.name == f"health-{YESTERDAY}.log.gz" and b"yesterday" in gzip.decompress(archive.read_bytes())
    assert _mode(install.logs / "archive") == 0o750 and _mode(archive) == 0o640
    assert _mode(install.textfiles / "monitor_health.prom") == 0o644


def test_a_log_archive_is_never_readable_by_others_even_while_it_is_written(tmp_path, monkeypatch):
    folder = tmp_path / "logs"
    folder.mkdir()
    lines = [{"asctime": f"{day}T08:00:00.000+00:00", "levelname": "ERROR", "message": "x"}
             for day in ("2026-03-01", "2026-03-02", date.today().isoformat())]
    (folder / "health.log").write_text("".join(json.dumps(r) + "\n" for r in lines))
    seen = []
    real_fsync = os.fsync

    def fsync(fd):
        seen.append(stat.S_IMODE(os.fstat(fd).st_mode))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    old_umask = os.umask(0)
    try:
        written = logs.archive_if_stale(str(folder), "health", date.today(), retention_days=3650)
    finally:
        os.umask(old_umask)
    assert len(written) == 2 and seen and set(seen) == {0o640}, [oct(m) for m in seen]


def _config_naming_a_token_file(tmp_path, config_mode: int, token_mode: int):
    token = tmp_path / "bot.token"
    token.write_text(BOT_TOKEN + "\n")
    os.chmod(token, token_mode)
    path = tmp_path / "monitor.toml"
    path.write_text(f'[telegram]\nchat_ids = ["-100777"]\ntoken_file = "{token}"\n')
    os.chmod(path, config_mode)
    return str(path), config_mod.load(str(path))


def test_a_config_readable_by_others_that_names_a_token_file_draws_a_warning(tmp_path):
    path, config = _config_naming_a_token_file(tmp_path, 0o644, 0o600)
    (warning,) = config_mod.exposure_warnings(path, config)
    assert warning.startswith(f"{path} is readable by others (mode 0644) and names telegram.token_file")
    assert warning.endswith(f"run: chmod o-r {path}")
    assert BOT_TOKEN not in warning


def test_a_token_file_others_may_read_draws_a_warning_naming_it_not_its_content(tmp_path):
    path, config = _config_naming_a_token_file(tmp_path, 0o640, 0o644)
    (warning,) = config_mod.exposure_warnings(path, config)
    assert "telegram.token_file" in warning and "mode 0644" in warning and "chmod 600" in warning
    assert BOT_TOKEN not in warning and BOT_TOKEN.split(":")[1] not in warning


def test_a_private_config_and_token_file_or_a_config_without_token_file_draw_no_warning(tmp_path):
    path, config = _config_naming_a_token_file(tmp_path, 0o640, 0o600)
    assert config_mod.exposure_warnings(path, config) == []
    public = tmp_path / "public.toml"
    public.write_text('[telegram]\nchat_ids = ["-100777"]\n')
    os.chmod(public, 0o644)
    assert config_mod.exposure_warnings(str(public), config_mod.load(str(public))) == []
    assert config_mod.exposure_warnings(None, config_mod.build({}, None, str(tmp_path))) == []
