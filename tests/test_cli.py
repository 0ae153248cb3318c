"""The `monitor` command as cron, an operator over SSH and their scripts see it:
exit codes, the one-line JSON on stdout, one clear line on stderr for every mistake."""

import json
import os
import re
import subprocess
import sys
from datetime import datetime

import pytest
from click.testing import CliRunner

from tests.conftest import HOST_CHECKS, MONITOR, clean_env, seed_cpu_baseline
from monitor.cli import cli, main

TELEGRAM_TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw1"


# --- verdicts and exit codes ----------------------------------------------------------------

@pytest.mark.parametrize("verdict, code", [("ok", 0), ("warning", 1), ("critical", 2)])
def test_the_exit_code_is_the_worst_check(tmp_path, run_monitor, verdict_config, envelope, verdict, code):
    proc = run_monitor(["health"], tmp_path, config=verdict_config(verdict))
    assert proc.returncode == code, proc.stderr
    data = envelope(proc)
    assert data["overall_status"] == verdict
    assert data["healthy"] is (verdict == "ok")
    assert data["checks"]["disk:/"]["status"] == verdict
    assert proc.stderr == ""


def test_without_a_config_the_host_checks_run_and_the_exit_code_matches_the_verdict(
        tmp_path, run_monitor, envelope):
    proc = run_monitor(["health"], tmp_path, steady_cpu=False)
    data = envelope(proc)
    assert set(data["checks"]) == HOST_CHECKS
    assert {c["kind"] for c in data["checks"].values()} == {"system"}
    assert proc.returncode == {"ok": 0, "warning": 1, "critical": 2, "unknown": 3}[data["overall_status"]]
    assert (tmp_path / "logs" / "health.log").is_file()
    assert (tmp_path / "state").is_dir()


def test_stdout_is_one_json_line_with_the_spec_envelope(tmp_path, run_monitor, verdict_config, envelope):
    proc = run_monitor(["health"], tmp_path, config=verdict_config("warning"))
    assert proc.stdout.count("\n") == 1
    data = envelope(proc)
    assert set(data) >= {"schema_version", "command", "timestamp", "host", "environment", "overall_status",
                         "healthy", "duration_ms", "checks", "notifications"}
    assert data["schema_version"] == 1
    assert data["command"] == "health"
    assert datetime.fromisoformat(data["timestamp"]).utcoffset() is not None
    assert data["host"] == os.uname().nodename
    assert data["environment"] == "prod"
    assert isinstance(data["duration_ms"], (int, float)) and data["duration_ms"] >= 0
    notifications = data["notifications"]
    assert {k: notifications[k] for k in ("sent", "queued", "silenced", "failed")} == {
        "sent": 0, "queued": 0, "silenced": 0, "failed": 0}  # no [telegram]: nothing to send
    assert set(data["checks"]) == HOST_CHECKS
    for check_id, check in data["checks"].items():
        assert set(check) >= {"kind", "status", "value", "unit", "message", "details"}, check_id
        assert check["status"] in ("ok", "warning", "critical", "unknown")
        assert isinstance(check["message"], str) and check["message"]
        assert isinstance(check["details"], dict)
    disk = data["checks"]["disk:/"]
    assert disk["unit"] == "%" and 0 <= disk["value"] <= 100
    assert (disk["warning"], disk["critical"]) == (0, 100)


def test_the_environment_comes_from_the_config(tmp_path, run_monitor, verdict_config, envelope):
    proc = run_monitor(["health"], tmp_path, config='environment = "dev"\n' + verdict_config("ok"))
    assert envelope(proc)["environment"] == "dev"


def test_text_format_prints_an_aligned_table_worst_first(tmp_path, run_monitor, verdict_config):
    proc = run_monitor(["health", "--format", "text"], tmp_path, config=verdict_config("warning"))
    assert proc.returncode == 1
    lines = proc.stdout.rstrip("\n").splitlines()
    assert "WARNING" in lines[0] and "health" in lines[0]
    header, rows = lines[1], lines[2:]
    assert header.split() == ["STATUS", "CHECK", "VALUE", "MESSAGE"]
    assert len(rows) == len(HOST_CHECKS)
    assert rows[0].split()[:2] == ["WARNING", "disk:/"]
    check_col, message_col = header.index("CHECK"), header.index("MESSAGE")
    for row in rows:
        assert row[check_col - 2:check_col] == "  " and row[check_col] != " ", row
        assert row[message_col - 2:message_col] == "  " and row[message_col] != " ", row
    assert "\033[" not in proc.stdout  # no colours when stdout is not a terminal
    assert "{" not in lines[1]


def test_quiet_prints_nothing_and_keeps_the_exit_code(tmp_path, run_monitor, verdict_config):
    assert run_monitor(["health", "--quiet"], tmp_path, config=verdict_config("ok")).stdout == ""
    proc = run_monitor(["health", "-q"], tmp_path, config=verdict_config("critical"))
    assert (proc.returncode, proc.stdout, proc.stderr) == (2, "", "")


def test_only_system_runs_the_host_checks(tmp_path, run_monitor, verdict_config, envelope):
    proc = run_monitor(["health", "--only", "system"], tmp_path, config=verdict_config("ok"))
    assert proc.returncode == 0
    assert set(envelope(proc)["checks"]) == HOST_CHECKS


# --- usage and config errors: exit 3, one line on stderr -----------------------------------

BAD_RUNS = {
    "unknown format": (["health", "--format", "xml"], None, "--format"),
    "unknown option": (["health", "--bogus"], None, "--bogus"),
    "unknown kind": (["health", "--only", "bogus"], None, "bogus"),
    "malformed toml": (["health"], "[system\n", "line 1"),
    "unknown key": (["health"], "[system]\nbogus = 1\n", "system.bogus: unknown key"),
    "bad duration": (["health"], '[vault]\ntimeout = "fast"\n',
                     'config error: vault.timeout: expected a duration like "5s", got "fast"'),
    "missing profile": (["health", "--env", "staging"], 'environment = "prod"\n', '"staging"'),
    "missing config": (["health", "--config", "nope.toml"], None, "nope.toml: no such file"),
    "config is a folder": (["health", "--config", "."], None, "is a directory"),
    "token in the file": (["health"], f'[telegram]\nchat_ids = ["-1"]\ntoken_env = "{TELEGRAM_TOKEN}"\n',
                          "telegram.token_env: looks like a token"),
    "config check": (["config", "check"], '[vault]\ntimeout = "fast"\n', "vault.timeout"),
}


@pytest.mark.parametrize("args, config, says", BAD_RUNS.values(), ids=BAD_RUNS.keys())
def test_a_bad_run_exits_3_with_one_line_on_stderr(tmp_path, run_monitor, args, config, says):
    proc = run_monitor(args, tmp_path, config=config)
    assert proc.returncode == 3
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.splitlines()) == 1, proc.stderr
    assert says in proc.stderr
    assert TELEGRAM_TOKEN not in proc.stderr


def test_the_bad_duration_line_is_exactly_the_documented_one(tmp_path, run_monitor):
    proc = run_monitor(["health"], tmp_path, config='[vault]\ntimeout = "fast"\n')
    assert proc.stderr == 'config error: vault.timeout: expected a duration like "5s", got "fast"\n'


def test_a_config_error_writes_neither_logs_nor_state(tmp_path, run_monitor):
    run_monitor(["health"], tmp_path, config="[system]\nbogus = 1\n", steady_cpu=False)
    assert not (tmp_path / "logs").exists() and not (tmp_path / "state").exists()


def test_every_config_error_gets_its_own_line(tmp_path, run_monitor):
    proc = run_monitor(["health"], tmp_path, config='[system]\nbogus = 1\n[vault]\ntimeout = "fast"\n')
    assert proc.returncode == 3
    assert proc.stderr.splitlines() == [
        "config error: system.bogus: unknown key",
        'config error: vault.timeout: expected a duration like "5s", got "fast"']


def test_a_config_file_that_is_not_text_exits_3(tmp_path, run_monitor):
    (tmp_path / "binary.toml").write_bytes(b"\xff\xfe\x00garbage\x80\n")
    proc = run_monitor(["health", "--config", "binary.toml"], tmp_path)
    assert proc.returncode == 3
    assert len(proc.stderr.splitlines()) == 1 and "Traceback" not in proc.stderr


def test_usage_errors_map_to_3_in_process(capsys):
    assert main(["health", "--format", "xml"]) == 3
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "--format" in err


def test_help_and_version_exit_0(capsys):
    assert main(["--version"]) == 0
    assert re.search(r"\d+\.\d+", capsys.readouterr().out)
    result = CliRunner().invoke(cli, ["health", "--help"])
    assert result.exit_code == 0
    for option in ("--config", "--env", "--format", "--quiet", "--no-notify", "--dry-run", "--only"):
        assert option in result.output


# --- failures around the run --------------------------------------------------------------------

def test_a_reader_that_goes_away_ends_the_run_quietly(tmp_path):
    script = f"set +o pipefail; {MONITOR} health | head -c1"
    proc = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=clean_env(), capture_output=True,
                          text=True, timeout=30)
    assert proc.stdout == "{"
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr


def test_a_closed_stdout_pipe_is_not_a_traceback(tmp_path, write_config, verdict_config):
    write_config(tmp_path, verdict_config("ok"), "ok.toml")
    seed_cpu_baseline(tmp_path / "state")
    reader, writer = os.pipe()
    os.close(reader)  # nobody will ever read: the first write gets EPIPE
    try:
        proc = subprocess.run([MONITOR, "health", "--config", "ok.toml"], cwd=tmp_path, env=clean_env(),
                              stdout=writer, stderr=subprocess.PIPE, text=True, timeout=30)
    finally:
        os.close(writer)
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr
    assert proc.returncode == 0


def test_unwritable_logs_do_not_stop_the_checks(tmp_path, run_monitor, verdict_config, envelope):
    (tmp_path / "logs").write_text("a file where the logs folder should be\n")
    proc = run_monitor(["health"], tmp_path, config='[paths]\nlogs = "logs"\n' + verdict_config("ok"))
    data = envelope(proc)
    assert set(data["checks"]) == HOST_CHECKS
    assert data["overall_status"] == "ok"
    assert "logs" in data["log_write_error"]
    assert proc.returncode == 1  # at least 1, though every check is ok
    [line] = proc.stderr.splitlines()
    assert "log" in line and str(tmp_path / "logs") in line
    assert "Traceback" not in proc.stderr


def test_unwritable_logs_keep_the_worse_exit_code_of_the_checks(tmp_path, run_monitor, verdict_config):
    (tmp_path / "logs").write_text("")
    proc = run_monitor(["health", "-q"], tmp_path, config='[paths]\nlogs = "logs"\n' + verdict_config("critical"))
    assert proc.returncode == 2
    assert len(proc.stderr.splitlines()) == 1


# --- config check ----------------------------------------------------------------------------

def test_config_check_prints_the_effective_config(tmp_path, run_monitor):
    proc = run_monitor(["config", "check", "--format", "json"], tmp_path,
                       config='[system]\ndisk_paths = ["/", "/srv"]\n[vault]\ntimeout = "15s"\n')
    assert proc.returncode == 0, proc.stderr
    shown = json.loads(proc.stdout)
    assert shown["system"]["disk_paths"] == ["/", "/srv"]
    assert shown["vault"]["timeout"] == "15s"
    assert shown["paths"]["logs"] == str(tmp_path / "logs")


def test_config_check_without_a_file_shows_the_defaults(tmp_path, run_monitor):
    proc = run_monitor(["config", "check", "--format", "json"], tmp_path)
    assert proc.returncode == 0
    assert json.loads(proc.stdout)["system"]["disk_paths"] == ["/"]


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_config_check_never_prints_the_token_from_the_environment(tmp_path, run_monitor, fmt):
    proc = run_monitor(["config", "check", "--format", fmt], tmp_path, config='[telegram]\nchat_ids = ["-100123"]\n',
                       env={"TELEGRAM_BOT_TOKEN": TELEGRAM_TOKEN})
    assert proc.returncode == 0
    assert "TELEGRAM_BOT_TOKEN" in proc.stdout
    assert TELEGRAM_TOKEN not in proc.stdout + proc.stderr
    assert TELEGRAM_TOKEN[-12:] not in proc.stdout + proc.stderr


def _token_line(proc) -> str:
    (line,) = [line for line in proc.stderr.splitlines() if "bot token" in line]
    return line


def test_config_check_exits_1_naming_the_unset_variable_when_telegram_has_no_token(tmp_path, run_monitor):
    proc = run_monitor(["config", "check", "--format", "json"], tmp_path, config='[telegram]\nchat_ids = ["-100123"]\n')
    assert proc.returncode == 1
    assert "$TELEGRAM_BOT_TOKEN is not set" in _token_line(proc) and "Traceback" not in proc.stderr
    assert json.loads(proc.stdout)["secrets"]["telegram.token"].startswith("MISSING")


def test_config_check_exits_1_naming_an_unreadable_token_file(tmp_path, run_monitor):
    (tmp_path / "bot.token").mkdir()  # there, but not a file anyone can read a token from
    proc = run_monitor(["config", "check"], tmp_path,
                       config='[telegram]\nchat_ids = ["-100123"]\ntoken_file = "bot.token"\n')
    assert proc.returncode == 1
    line = _token_line(proc)
    assert f"cannot read telegram.token_file {tmp_path / 'bot.token'}" in line and "Is a directory" in line


def test_config_check_exits_1_naming_the_vault_it_could_not_reach(tmp_path, run_monitor):
    from tests.openbao import unused_url

    url = unused_url()
    proc = run_monitor(["config", "check"], tmp_path, env={"VAULT_TOKEN": "s.test-vault-token-value"},
                       config=f'[vault]\nurl = "{url}"\n[telegram]\nchat_ids = ["-100123"]\n'
                              'token_vault = "secret/monitor#telegram_token"\n')
    assert proc.returncode == 1
    line = _token_line(proc)
    assert "secret/monitor#telegram_token" in line and "unreachable" in line and url in line
    assert "s.test-vault-token-value" not in proc.stdout + proc.stderr


def test_config_check_says_where_a_found_token_comes_from_and_exits_0(tmp_path, run_monitor):
    proc = run_monitor(["config", "check", "--format", "json"], tmp_path, config='[telegram]\nchat_ids = ["-100123"]\n',
                       env={"TELEGRAM_BOT_TOKEN": TELEGRAM_TOKEN})
    assert proc.returncode == 0 and proc.stderr == ""
    assert json.loads(proc.stdout)["secrets"]["telegram.token"] == "found ($TELEGRAM_BOT_TOKEN)"


# --- monitor cron and the bot token --------------------------------------------------------

def test_monitor_cron_shows_how_to_get_an_env_only_token_to_cron_without_printing_it(tmp_path, run_monitor):
    proc = run_monitor(["cron"], tmp_path, config='[telegram]\nchat_ids = ["-100123"]\n',
                       env={"TELEGRAM_BOT_TOKEN": TELEGRAM_TOKEN})
    assert proc.returncode == 0
    lines = proc.stdout.splitlines()
    env_line = next(i for i, line in enumerate(lines) if line.startswith("# TELEGRAM_BOT_TOKEN="))
    first_job = next(i for i, line in enumerate(lines) if not line.startswith("#"))
    assert env_line < first_job  # an environment line must sit above the jobs
    assert "telegram.token_file" in proc.stdout and "chmod 600" in proc.stdout
    assert TELEGRAM_TOKEN not in proc.stdout and TELEGRAM_TOKEN.split(":")[1] not in proc.stdout


def test_monitor_cron_warns_about_a_token_file_others_may_read(tmp_path, run_monitor):
    token = tmp_path / "bot.token"
    token.write_text(TELEGRAM_TOKEN)
    token.chmod(0o644)
    proc = run_monitor(["cron"], tmp_path, config='[telegram]\nchat_ids = ["-100123"]\ntoken_file = "bot.token"\n')
    assert proc.returncode == 0
    assert f"# WARNING: {token} is readable by group or others (mode 0644): chmod 600 {token}" in proc.stdout
    assert "TELEGRAM_BOT_TOKEN=" not in proc.stdout
    token.chmod(0o600)
    proc = run_monitor(["cron"], tmp_path, config='[telegram]\nchat_ids = ["-100123"]\ntoken_file = "bot.token"\n')
    assert "WARNING" not in proc.stdout and TELEGRAM_TOKEN not in proc.stdout


def test_config_check_checks_every_profile(tmp_path, run_monitor):
    proc = run_monitor(["config", "check"], tmp_path,
                       config='[env.dev.system]\ndisk_percent = { warning = 99, critical = 1 }\n')
    assert proc.returncode == 3
    assert "disk_percent" in proc.stderr and "dev" in proc.stderr


# --- cost of a run ---------------------------------------------------------------------------

def test_a_host_only_run_imports_no_heavy_library(tmp_path):
    code = (
        "import json, sys\n"
        "from monitor.cli import main\n"
        "try:\n"
        "    code = main(['health', '--format', 'json', '--quiet'])\n"
        "except SystemExit as exc:\n"
        "    code = exc.code\n"
        "heavy = ['requests', 'hvac', 'jinja2', 'prometheus_client', 'psutil', 'matplotlib']\n"
        "print(json.dumps({'code': code, 'loaded': [m for m in heavy if m in sys.modules]}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=clean_env(), capture_output=True,
                          text=True, timeout=30)
    result = json.loads(proc.stdout.splitlines()[-1])
    assert result["loaded"] == []
    assert result["code"] in (0, 1, 2)


def test_a_job_run_imports_none_of_the_other_commands_which_help_and_typos_still_see(tmp_path, capsys):
    code = ("import json, sys\n"
            "from monitor.cli import main\n"
            "code = main(['health', '--format', 'json', '--quiet'])\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('monitor.commands'))))\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=clean_env(), capture_output=True,
                          text=True, timeout=30)
    assert json.loads(proc.stdout.splitlines()[-1]) == []
    listed = CliRunner().invoke(cli, ["--help"]).output.split("Commands:")[1]
    assert [line.split()[0] for line in listed.strip().splitlines()] == [
        "backup-check", "config", "cron", "daily-report", "health", "notify", "render", "schema", "silence",
        "telegram"]
    assert main(["silense"]) == 3
    assert "No such command 'silense'. Did you mean 'silence'?" in capsys.readouterr().err


def test_a_world_readable_config_naming_a_token_file_draws_a_warning(tmp_path, run_monitor):
    (tmp_path / "bot.token").write_text("not-a-real-token\n")
    (tmp_path / "bot.token").chmod(0o644)
    config = '[telegram]\nchat_ids = ["-100123"]\ntoken_file = "bot.token"\n'
    check = run_monitor(["config", "check"], tmp_path, config=config)
    assert check.returncode == 0, check.stderr
    (tmp_path / "test.toml").chmod(0o644)
    check = run_monitor(["config", "check"], tmp_path, config=config)
    warnings = [line for line in check.stderr.splitlines() if line.startswith("warning: ")]
    assert any("readable by others" in w and "chmod o-r" in w for w in warnings)
    assert any("telegram.token_file" in w and "chmod 600" in w for w in warnings)
    assert "not-a-real-token" not in check.stdout + check.stderr

    health = run_monitor(["health", "--quiet", "--no-notify"], tmp_path, config=config)
    assert "warning:" not in health.stderr  # cron would mail it every 5 minutes
    logged = (tmp_path / "logs" / "health.log").read_text()
    assert "readable by others" in logged and "not-a-real-token" not in logged


# --- run from the wrong folder; options before the subcommand (issue 11, item 13) -------------

def test_with_no_config_found_stderr_the_json_and_the_text_say_so(tmp_path, run_monitor, envelope):
    proc = run_monitor(["health", "--format", "json"], tmp_path)
    assert proc.returncode in (0, 1, 2)
    assert proc.stderr.splitlines() == [
        f"monitor health: no config found (no --config or $MONITOR_CONFIG; searched {tmp_path}/monitor.toml, "
        "/etc/monitor/monitor.toml): host checks only"]
    assert envelope(proc)["config"] is None
    text = run_monitor(["health", "--format", "text"], tmp_path)
    assert text.stdout.splitlines()[1] == "config: none found, built-in defaults (host checks only)"
    quiet = run_monitor(["health", "--quiet"], tmp_path)
    assert quiet.stdout == "" and quiet.stderr == ""  # cron: the exit code and the log speak
    assert run_monitor(["backup-check", "--format", "json"], tmp_path).stderr.startswith(
        "monitor backup-check: no config found")


def test_with_a_config_the_json_names_it_and_stderr_stays_quiet(tmp_path, run_monitor, verdict_config, envelope):
    proc = run_monitor(["health", "--format", "json"], tmp_path, config=verdict_config("ok"))
    assert proc.stderr == ""
    assert envelope(proc)["config"] == str(tmp_path / "test.toml")
    text = run_monitor(["health", "--format", "text"], tmp_path, config=verdict_config("ok"))
    assert "config: none found" not in text.stdout


def test_common_options_before_the_subcommand_apply_and_after_it_win(tmp_path, run_monitor, verdict_config,
                                                                     envelope):
    config = tmp_path / "x.toml"
    config.write_text('environment = "staging"\n' + verdict_config("warning"))
    proc = run_monitor(["--config", str(config), "--format", "json", "health"], tmp_path)
    assert proc.returncode == 1 and proc.stderr == ""
    data = envelope(proc)
    assert data["environment"] == "staging" and data["config"] == str(config)

    after = run_monitor(["--format", "text", "health", "--format", "json"], tmp_path, config=verdict_config("ok"))
    assert envelope(after)["config"] == str(tmp_path / "test.toml")  # --config and --format after won

    quiet = run_monitor(["--quiet", "--config", str(config), "health"], tmp_path)
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (1, "", "")

    # Typed on the command line, before the subcommand, it beats $MONITOR_CONFIG.
    other = tmp_path / "other.toml"
    other.write_text('environment = "other"\n' + verdict_config("ok"))
    env = run_monitor(["--config", str(config), "health", "--format", "json"], tmp_path,
                      env={"MONITOR_CONFIG": str(other)})
    assert envelope(env)["environment"] == "staging"

    check = run_monitor(["--config", str(config), "config", "check", "--format", "json"], tmp_path)
    assert check.returncode == 0 and json.loads(check.stdout)["environment"] == "staging"
    bad = run_monitor(["--env", "nope", "--config", str(config), "health"], tmp_path)
    assert bad.returncode == 3 and bad.stderr.startswith('config error: --env: no profile "nope"')


@pytest.mark.parametrize("how", ["option", "variable"])
def test_a_profile_name_with_shell_or_control_characters_is_refused_in_one_line(tmp_path, run_monitor, how):
    name = "prod\n$(touch pwned)"
    args, env = (["health", "--env", name], None) if how == "option" else (["health"], {"MONITOR_ENV": name})
    proc = run_monitor(args, tmp_path, env=env, config="[system]\n")
    assert (proc.returncode, proc.stdout) == (3, "")
    assert proc.stderr == ('config error: --env: a profile name is letters, digits, _ . and - only, '
                           'got "prod\\n$(touch pwned)"\n')
