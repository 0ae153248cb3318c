"""The config file: where it is found, what it may hold, and how every mistake is reported."""

import json
import os
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor import config
from monitor.config import ConfigError
from monitor.results import Threshold

TELEGRAM_TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw1"
VAULT_TOKEN = "hvs.CAESIJlWh1Q8mZ3N2Yx4gZQ1"
QUOTA = """
[[quotas]]
name = "etherscan"
url = "https://api.example.org/v1/quota"
remaining_header = "X-RateLimit-Remaining"
limit = 100000
"""


@pytest.fixture
def load(tmp_path):
    """load(toml_text, env=None) -> the validated config of a file in tmp_path."""
    def load_text(text, env=None, name="monitor.toml"):
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return config.load(str(path), env)
    return load_text


@pytest.fixture
def errors(load):
    """errors(toml_text, env=None) -> the list of config errors the file causes."""
    def errors_of(text, env=None):
        with pytest.raises(ConfigError) as info:
            load(text, env)
        return info.value.errors
    return errors_of


# --- finding the file ------------------------------------------------------------------

def test_without_a_file_the_built_in_defaults_run_host_checks_only(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = config.load(None)
    assert cfg["source"] is None
    assert cfg["environment"] == "prod"
    assert (cfg["vault"], cfg["telegram"], cfg["report"]) == (None, None, None)
    assert (cfg["scrapers"], cfg["quotas"], cfg["backups"]) == ([], [], [])
    assert cfg["system"]["disk_paths"] == ["/"]
    assert cfg["system"]["cpu_percent"] == Threshold(80, 95)


def test_without_a_file_state_and_logs_live_in_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = config.load(None)
    assert cfg["paths"] == {"logs": str(tmp_path / "logs"), "state": str(tmp_path / "state")}


def test_monitor_toml_in_the_working_directory_is_found(tmp_path, monkeypatch, write_config):
    write_config(tmp_path, 'environment = "staging"\n')
    monkeypatch.chdir(tmp_path)
    cfg = config.load(None)
    assert cfg["source"] == str(tmp_path / "monitor.toml")
    assert cfg["environment"] == "staging"


def test_an_explicit_config_wins_over_the_one_in_the_working_directory(tmp_path, monkeypatch, write_config):
    write_config(tmp_path, 'environment = "cwd"\n')
    write_config(tmp_path, 'environment = "explicit"\n', "other.toml")
    monkeypatch.chdir(tmp_path)
    assert config.load("other.toml")["environment"] == "explicit"


def test_a_missing_explicit_config_is_an_error_not_the_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="--config: nope.toml: no such file"):
        config.load("nope.toml")


def test_an_explicit_config_that_is_a_folder_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="is a directory, expected a TOML file"):
        config.load(str(tmp_path))


def test_discovery_order_is_option_then_environment_variable_then_working_directory(
        tmp_path, run_monitor, write_config, verdict_config):
    # Each candidate forces a different verdict, so the exit code says which was read.
    write_config(tmp_path, verdict_config("critical"))
    write_config(tmp_path, verdict_config("warning"), "from_env.toml")
    write_config(tmp_path, verdict_config("ok"), "from_option.toml")
    env = {"MONITOR_CONFIG": str(tmp_path / "from_env.toml")}
    assert run_monitor(["health", "-q"], tmp_path).returncode == 2
    assert run_monitor(["health", "-q"], tmp_path, env=env).returncode == 1
    assert run_monitor(["health", "-q", "--config", "from_option.toml"], tmp_path, env=env).returncode == 0


# --- reading it ---------------------------------------------------------------------

def test_malformed_toml_reports_the_line(errors):
    [error] = errors("""\
        [system]
        disk_paths = ["/"]
        cpu_percent = { warning = 80 critical = 95 }
        """)
    assert "invalid TOML" in error and "line 3" in error


def test_a_file_that_is_not_utf8_is_a_clear_error(tmp_path):
    path = tmp_path / "monitor.toml"
    path.write_bytes(b'environment = "\xff\xfe"\n')
    with pytest.raises(ConfigError, match="not UTF-8"):
        config.load(str(path))


# --- validating it --------------------------------------------------------------------

def test_an_unknown_key_is_reported_with_its_dotted_path_and_a_suggestion(errors):
    assert errors("[system]\ncpu_precent = { warning = 1, critical = 2 }\n") == [
        'system.cpu_precent: unknown key (did you mean "cpu_percent"?)']


def test_an_unknown_section_is_an_error(errors):
    assert errors("[sytem]\n") == ['sytem: unknown key (did you mean "system"?)']


def test_a_value_of_the_wrong_type_is_an_error(errors):
    assert errors("[alerts]\nalert_after = \"3\"\n") == ["alerts.alert_after: expected an integer, got a string"]
    assert errors("[system]\ndisk_paths = \"/\"\n") == ["system.disk_paths: expected a list, got a string"]


def test_a_bad_duration_is_reported_exactly(errors):
    assert errors('[vault]\ntimeout = "fast"\n') == ['vault.timeout: expected a duration like "5s", got "fast"']


def test_a_zero_timeout_is_refused(errors):
    assert errors('[vault]\ntimeout = "0s"\n') == ['vault.timeout: expected a duration above zero, got "0s"']


def test_durations_and_sizes_are_parsed_into_seconds_and_bytes(load):
    cfg = load("""\
        [alerts]
        repeat_interval = "1h30m"
        [[backups]]
        name = "postgres"
        path = "/var/backups/*.sql.gz"
        max_age = "26h"
        min_size = "500KB"
        """)
    assert cfg["alerts"]["repeat_interval"] == 5400
    assert cfg["backups"][0]["max_age"] == 26 * 3600
    assert cfg["backups"][0]["min_size"] == 500_000


def test_a_bad_size_is_reported(errors):
    assert errors('[[backups]]\nname = "db"\npath = "/b/*.gz"\nmin_size = "lots"\n') == [
        'backups[0].min_size: expected a size like "1MB", got "lots"']


def test_warning_above_critical_is_a_config_error(errors):
    assert errors("[system]\ndisk_percent = { warning = 95, critical = 90 }\n") == [
        "system.disk_percent: warning (95) is above critical (90)"]


def test_a_percent_above_100_is_a_config_error(errors):
    assert errors("[system]\ndisk_percent = { warning = 90, critical = 120 }\n") == [
        "system.disk_percent.critical: expected a value in [0, 100], got 120"]


def test_a_threshold_needs_both_levels(errors):
    assert errors("[system]\ncpu_percent = { warning = 90 }\n") == ["system.cpu_percent.critical: required"]


def test_vault_token_ttl_is_lower_is_worse_so_warning_below_critical_is_an_error(errors):
    assert errors('[vault]\ntoken_ttl = { warning = "1d", critical = "7d" }\n') == [
        'vault.token_ttl: warning ("1d") is below critical ("7d"); lower is worse here']


def test_vault_token_ttl_judges_a_shorter_ttl_as_worse(load):
    ttl = load('[vault]\ntoken_ttl = { warning = "7d", critical = "1d" }\n')["vault"]["token_ttl"]
    assert [ttl.judge(days * 86400) for days in (30, 3, 0.5)] == ["ok", "warning", "critical"]


def test_quota_remaining_percent_is_lower_is_worse(errors, load):
    assert errors(QUOTA + "remaining_percent = { warning = 5, critical = 20 }\n") == [
        "quotas[0].remaining_percent: warning (5) is below critical (20); lower is worse here"]
    quota = load(QUOTA + "remaining_percent = { warning = 20, critical = 5 }\n")["quotas"][0]
    assert quota["remaining_percent"].judge(10) == "warning"


def test_every_error_is_reported_at_once(errors):
    found = errors("""\
        [system]
        bogus = 1
        [vault]
        timeout = "fast"
        [report]
        timezone = "Mars/Olympus"
        """)
    assert found == ["system.bogus: unknown key", 'vault.timeout: expected a duration like "5s", got "fast"',
                     'report.timezone: unknown time zone "Mars/Olympus"']


@pytest.mark.parametrize("zone", ["Mars/Olympus", "America", "../../etc/passwd"])
def test_an_unknown_report_timezone_is_a_config_error(errors, zone):
    assert errors(f'[report]\ntimezone = "{zone}"\n') == [f'report.timezone: unknown time zone "{zone}"']


def test_a_known_report_timezone_is_accepted(load):
    assert load('[report]\ntimezone = "Europe/Paris"\n')["report"]["timezone"] == "Europe/Paris"


def test_relative_paths_resolve_against_the_config_files_folder(tmp_path, monkeypatch):
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "monitor.toml").write_text(textwrap.dedent("""\
        [paths]
        logs = "logs"
        state = "../var/state"
        [telegram]
        token_file = "secrets/bot"
        [[backups]]
        name = "db"
        path = "/var/backups/*.gz"
        """))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = config.load(str(etc / "monitor.toml"))
    assert cfg["paths"] == {"logs": str(etc / "logs"), "state": str(tmp_path / "var" / "state")}
    assert cfg["telegram"]["token_file"] == str(etc / "secrets" / "bot")
    assert cfg["backups"][0]["path"] == "/var/backups/*.gz"


# --- environment profiles ----------------------------------------------------------------

PROFILES = """\
    environment = "prod"
    [system]
    disk_paths = ["/", "/srv"]
    cpu_percent = { warning = 80, critical = 95 }
    memory_percent = { warning = 70, critical = 90 }
    [env.dev.system]
    cpu_percent = { warning = 95, critical = 99 }
    [env.dev.alerts]
    alert_after = 3
    [env.ci.system]
    disk_paths = ["/tmp"]
    """


def test_an_env_profile_is_deep_merged_over_the_base(load):
    cfg = load(PROFILES, env="dev")
    assert cfg["environment"] == "dev"
    assert cfg["system"]["cpu_percent"] == Threshold(95, 99)
    assert cfg["system"]["memory_percent"] == Threshold(70, 90)  # the rest of [system] stays
    assert cfg["system"]["disk_paths"] == ["/", "/srv"]
    assert cfg["alerts"]["alert_after"] == 3


def test_a_list_in_a_profile_replaces_the_base_list(load):
    assert load(PROFILES, env="ci")["system"]["disk_paths"] == ["/tmp"]


def test_without_env_the_files_environment_is_the_profile(load):
    cfg = load(PROFILES.replace('environment = "prod"', 'environment = "dev"'))
    assert cfg["environment"] == "dev"
    assert cfg["system"]["cpu_percent"] == Threshold(95, 99)


def test_the_base_profile_ignores_other_profiles(load):
    cfg = load(PROFILES)
    assert cfg["environment"] == "prod"
    assert cfg["system"]["cpu_percent"] == Threshold(80, 95)


def test_env_naming_a_missing_profile_is_an_error(errors):
    [error] = errors(PROFILES, env="staging")
    assert error.startswith('--env: no profile "staging"')
    assert "known: ci, dev, prod" in error


def test_env_naming_a_profile_without_a_file_is_an_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match='no profile "dev" \\(no config file\\)'):
        config.load(None, "dev")


def test_monitor_env_selects_the_profile(tmp_path, run_monitor, verdict_config):
    text = verdict_config("ok") + "[env.dev.system]\ndisk_percent = { warning = 0, critical = 0 }\n"
    assert run_monitor(["health", "-q"], tmp_path, config=text).returncode == 0
    assert run_monitor(["health", "-q"], tmp_path, config=text, env={"MONITOR_ENV": "dev"}).returncode == 2


def test_a_profile_may_not_rename_the_environment(errors):
    assert errors('[env.dev]\nenvironment = "prod"\n', env="dev") == [
        "env.dev.environment: not allowed inside a profile"]


# --- secrets are refused ----------------------------------------------------------------

@pytest.mark.parametrize("text, path", [
    ('[telegram]\ntoken = "abc"\n', "telegram.token"),
    ('[vault]\ntoken = "abc"\n', "vault.token"),
    ('[[scrapers]]\nname = "a"\nurl = "http://127.0.0.1/h"\npassword = "x"\n', "scrapers[0].password"),
    ('[env.dev.telegram]\nbot_token = "abc"\n', "env.dev.telegram.bot_token"),
])
def test_a_secret_key_anywhere_is_refused(errors, text, path):
    assert any(e.startswith(f"{path}: secrets may not be stored in the config file") for e in errors(text))


@pytest.mark.parametrize("text", [
    f'[telegram]\nchat_ids = ["{TELEGRAM_TOKEN}"]\n',
    f'[telegram]\ntoken_env = "{TELEGRAM_TOKEN}"\n',
    f'[telegram]\napi_url = "https://api.telegram.org/bot{TELEGRAM_TOKEN}"\n',
    f'[vault]\ntoken_env = "{VAULT_TOKEN}"\n',
    f'environment = "{VAULT_TOKEN}"\n',
])
def test_a_token_shaped_value_is_refused_and_never_echoed(errors, text):
    found = errors(text)
    assert any("looks like a token; secrets may not be stored in the config file" in e for e in found)
    assert not any(TELEGRAM_TOKEN in e or VAULT_TOKEN in e for e in found)


def test_a_literal_api_key_header_is_refused(errors):
    assert errors(QUOTA + 'headers = { "X-Api-Key" = "literal" }\n') == [
        'quotas[0].headers.X-Api-Key: secrets may not be stored in the config file; '
        'write "env:VARIABLE" to read it from the environment']


def test_a_header_read_from_the_environment_is_accepted(load):
    cfg = load(QUOTA + 'headers = { "X-Api-Key" = "env:ETHERSCAN_API_KEY", Accept = "application/json" }\n')
    assert cfg["quotas"][0]["headers"]["X-Api-Key"] == "env:ETHERSCAN_API_KEY"


def test_a_database_url_with_a_password_is_refused_without_echoing_it(errors, load):
    [error] = errors('[report]\ndatabase = "postgresql://scraper:hunter2@db/opps"\n')
    assert error.startswith("report.database: the URL contains a password")
    assert "hunter2" not in error
    found = errors('[report]\ndatabase = "mysql://scraper:hunter2@db/opps"\n')
    assert len(found) == 2 and not any("hunter2" in e for e in found)
    assert load('[report]\ndatabase = "postgresql://scraper@db/opps"\n')["report"]["database"]


def test_a_url_with_a_port_is_not_mistaken_for_a_password(load):
    assert load('[vault]\nurl = "http://127.0.0.1:8200"\n')["vault"]["url"] == "http://127.0.0.1:8200"


# --- sections ---------------------------------------------------------------------------

def test_a_scraper_process_regex_that_does_not_compile_is_one_clear_error(errors):
    [error] = errors('[[scrapers]]\nname = "uniswap"\nprocess = "scraper.py ([a-z"\n')
    assert error.startswith("scrapers[0].process: invalid regular expression")


def test_a_scraper_without_any_probe_is_an_error(errors):
    assert errors('[[scrapers]]\nname = "uniswap"\n') == [
        "scrapers[0]: no probe configured: set one of url, process, heartbeat_file"]


def test_scraper_names_must_be_unique(errors):
    text = '[[scrapers]]\nname = "a"\nurl = "http://127.0.0.1/h"\n' * 2
    assert errors(text) == ['scrapers[1].name: duplicate name "a"']


def test_a_scraper_needs_a_name(errors):
    assert errors('[[scrapers]]\nurl = "http://127.0.0.1/h"\n') == ["scrapers[0].name: required"]


def test_a_quota_without_a_remaining_source_is_an_error(errors):
    text = '[[quotas]]\nname = "e"\nurl = "https://api.example.org/q"\nlimit = 10\n'
    assert errors(text) == ["quotas[0]: no remaining quota source: set one of remaining_header, remaining_json"]


def test_telegram_chat_ids_are_numbers_or_channel_names(load, errors):
    cfg = load('[telegram]\nchat_ids = [-1001234567890, "-42", "@ops_channel"]\n')
    assert cfg["telegram"]["chat_ids"] == ["-1001234567890", "-42", "@ops_channel"]
    assert errors('[telegram]\nchat_ids = ["ops team"]\n') == [
        "telegram.chat_ids[0]: expected a numeric chat id or @channelname, got 'ops team'"]


def test_a_backup_verify_method_must_be_known(errors):
    assert errors('[[backups]]\nname = "db"\npath = "/b/*.gz"\nverify = "md5"\n') == [
        'backups[0].verify: expected one of none, gzip, tar, zip, sha256, got "md5"']


def test_the_display_form_shows_units_as_the_user_wrote_them(load):
    shown = config.display(load('[vault]\ntimeout = "15s"\ntoken_ttl = { warning = "7d", critical = "1d" }\n'))
    assert shown["vault"]["timeout"] == "15s"
    assert shown["vault"]["token_ttl"] == {"warning": "7d", "critical": "1d"}


def test_secret_sources_say_where_a_token_comes_from_never_its_value(load):
    cfg = load('[telegram]\nchat_ids = ["-1"]\n')
    sources = config.secret_sources(cfg, {"TELEGRAM_BOT_TOKEN": TELEGRAM_TOKEN})
    assert sources == {"telegram.token_env": "$TELEGRAM_BOT_TOKEN (set, ****)"}
    assert config.secret_sources(cfg, {}) == {"telegram.token_env": "$TELEGRAM_BOT_TOKEN (not set)"}


def test_home_is_expanded_in_paths(load):
    assert load('[paths]\nlogs = "~/monitor-logs"\n')["paths"]["logs"] == os.path.expanduser("~/monitor-logs")


# --- ${NAME} placeholders in URL values (issue 11, item 6) ------------------------------------

def test_url_placeholders_are_filled_from_the_environment_and_displayed_as_written(load, monkeypatch):
    monkeypatch.setenv("HC_PING_KEY", "ping-key-abcdefghijklmnop")
    monkeypatch.setenv("PUSH_HOST", "127.0.0.1:9091")
    cfg = load("""
        [heartbeat]
        health = "https://hc-ping.com/${HC_PING_KEY}/health"
        [prometheus]
        pushgateway_url = "http://${PUSH_HOST}"
    """)
    assert cfg["heartbeat"]["health"] == "https://hc-ping.com/ping-key-abcdefghijklmnop/health"
    assert cfg["heartbeat"]["backup-check"] == "" and cfg["heartbeat"]["daily-report"] == ""
    assert cfg["prometheus"]["pushgateway_url"] == "http://127.0.0.1:9091"
    shown = config.display(cfg)
    assert shown["heartbeat"]["health"] == "https://hc-ping.com/${HC_PING_KEY}/health"
    from monitor.redact import scrub

    assert "ping-key-abcdefghijklmnop" not in scrub(f"GET {cfg['heartbeat']['health']}")


def test_bad_placeholders_are_errors_naming_the_key(errors, monkeypatch):
    monkeypatch.setenv("SPACEY", "a b")
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    assert errors("""
        [heartbeat]
        health = "https://hc-ping.com/${NOT_SET_ANYWHERE}"
        backup-check = "https://hc-ping.com/${SPACEY}"
        daily-report = "https://hc-ping.com/${1BAD}"
    """) == [
        "heartbeat.health: environment variable NOT_SET_ANYWHERE (in ${NOT_SET_ANYWHERE}) is not set",
        "heartbeat.backup-check: environment variable SPACEY (in ${SPACEY}) holds spaces or control characters",
        'heartbeat.daily-report: malformed placeholder in "https://hc-ping.com/${1BAD}"; '
        "expected ${NAME} with NAME letters, digits or _",
    ]


def test_a_heartbeat_url_must_be_http(errors):
    assert errors('[heartbeat]\nhealth = "hc-ping.com/abc"\n') == [
        'heartbeat.health: expected a URL starting with http:// or https://, got "hc-ping.com/abc"']
    assert errors('[heartbeat]\nweekly = "https://hc-ping.com/abc"\n')[0].startswith("heartbeat.weekly: unknown key")


# --- hostile nesting (issue 12, item 14) ---------------------------------------------------

DEEP = 100_000


@pytest.mark.parametrize("text", [
    "a = " + "{a = " * DEEP + "1" + "}" * DEEP,             # inline tables: tomllib recurses per level
    "a = " + "[" * DEEP + "]" * DEEP,                        # arrays
    "[" + ".".join(["a"] * DEEP) + "]\nx = 1\n",            # one table header: tomllib takes minutes
    "a." * DEEP + "b = 1\n",                                 # a dotted key
    "x = " + "{a = " * 40 + "1" + "}" * 40,                  # shallow enough for tomllib, not for the walks
], ids=["inline-tables", "arrays", "table-header", "dotted-key", "40-levels"])
def test_deeply_nested_toml_is_one_config_error_line_and_exit_3(tmp_path, run_monitor, text):
    (tmp_path / "deep.toml").write_text(text)
    for args in (["health", "--quiet"], ["config", "check"]):
        proc = run_monitor([*args, "--config", "deep.toml"], tmp_path, steady_cpu=False)
        assert proc.returncode == 3, proc.stderr[-500:]
        assert proc.stdout == "" and "Traceback" not in proc.stderr
        lines = proc.stderr.splitlines()
        assert len(lines) == 1 and len(lines[0]) < 300, lines[:2]
        assert lines[0].startswith(f"config error: {tmp_path / 'deep.toml'}: ")
        assert "nested more than 32 levels deep" in lines[0]


def test_nesting_the_schema_needs_still_loads(load):
    cfg = load("""
        [env.dev.system.cpu_percent]
        warning = 90
        critical = 99
    """, env="dev")
    assert cfg["system"]["cpu_percent"] == Threshold(90, 99)


# --- secrets in URLs (issue 12, items 6 and 7) --------------------------------------------

@pytest.mark.parametrize("text, path, literal", [
    (QUOTA.replace("/v1/quota", "/api?module=account&apikey=ZX81QWERTY") , "quotas[0].url", "ZX81QWERTY"),
    ('[[scrapers]]\nname = "a"\nurl = "http://127.0.0.1/h?Token=abc123"\n', "scrapers[0].url", "abc123"),
    ('[telegram]\napi_url = "https://tg.example/?access_token=abc123"\n', "telegram.api_url", "abc123"),
    ('[vault]\nurl = "https://ops:abc123@vault.example:8200"\n', "vault.url", "abc123"),
    ('[prometheus]\npushgateway_url = "http://push:abc123@127.0.0.1:9091"\n', "prometheus.pushgateway_url", "abc123"),
    ('[heartbeat]\nhealth = "https://hc.example/ping?sig=abc123"\n', "heartbeat.health", "abc123"),
    ('[report]\ndatabase = "postgresql://db/opps?password=abc123"\n', "report.database", "abc123"),
    ('[[quotas]]\nname = "q"\nurl = "https://x.example/q?key=${K}x&secret=abc123"\nlimit = 1\n'
     'remaining_header = "R"\n', "quotas[0].url", "abc123"),
])
def test_a_literal_secret_in_any_url_is_refused_without_echoing_it(errors, monkeypatch, text, path, literal):
    monkeypatch.setenv("K", "from-the-environment")
    found = errors(text)
    assert [e for e in found if e.startswith(f"{path}: ")] == found and len(found) == 1, found
    assert "secrets may not be stored in the config file" in found[0]
    assert literal not in found[0]


def test_url_secrets_may_come_from_placeholders_and_are_masked_wherever_printed(load, monkeypatch):
    monkeypatch.setenv("ETHERSCAN_API_KEY", "QK7W9TZ3ETHERSCANKEY0123456789AB")
    monkeypatch.setenv("PGPASSWORD_MONITOR", "pg-pass-0815-xyz")
    cfg = load("""
        [[quotas]]
        name = "etherscan"
        url = "https://api.etherscan.io/v2/api?chainid=1&module=account&apikey=${ETHERSCAN_API_KEY}"
        remaining_json = "result.remaining"
        limit = 100000
        [report]
        database = "postgresql://monitor:${PGPASSWORD_MONITOR}@db.example/opps?sslmode=require"
        [prometheus]
        pushgateway_url = "http://push@127.0.0.1:9091/"
    """)
    assert cfg["quotas"][0]["url"].endswith("&apikey=QK7W9TZ3ETHERSCANKEY0123456789AB")
    assert cfg["report"]["database"] == "postgresql://monitor:pg-pass-0815-xyz@db.example/opps?sslmode=require"
    shown = config.display(cfg)  # what `config check` prints
    assert shown["quotas"][0]["url"] == \
        "https://api.etherscan.io/v2/api?chainid=***&module=***&apikey=${ETHERSCAN_API_KEY}"
    assert shown["report"]["database"] == "postgresql://***@db.example/opps?sslmode=***"
    assert shown["prometheus"]["pushgateway_url"] == "http://***@127.0.0.1:9091/"
    from monitor.redact import scrub

    line = f'https://api.etherscan.io:443 "GET {cfg["quotas"][0]["url"][24:]} HTTP/1.1" 200 52'
    assert "QK7W9TZ3" not in scrub(line) and "pg-pass-0815" not in scrub(str(cfg))


@pytest.mark.parametrize("text, kept", [
    # Short values are not registered (MIN_LENGTH): the shape masks them.
    ('http://127.0.0.1:8080 "GET /api?module=account&apikey=k3y HTTP/1.1" 200 2', "module=account"),
    ("push to http://push:pw42@push.example:9191 failed", "@push.example:9191 failed"),
    ('GET /q?sig=Zx9&Access_Token=a1b2 HTTP/1.1', "GET /q?"),
])
def test_secret_query_values_and_url_passwords_are_scrubbed_from_any_text(text, kept):
    from monitor.redact import scrub

    scrubbed = scrub(text)
    assert kept in scrubbed and "***" in scrubbed
    assert not any(secret in scrubbed for secret in ("k3y", "pw42", "Zx9", "a1b2"))


@pytest.mark.parametrize("secret", [
    TELEGRAM_TOKEN,                                   # a bare bot token
    f"bot{TELEGRAM_TOKEN}",                           # as it sits in the API URL
    VAULT_TOKEN,                                      # hvs.
    "s.Q2V4ZmRzYWRmYXNkZmFzZGZh",                     # a legacy Vault service token
    "b.AAAAAQL8T3YTf1pWq0y9kxMnqKw",                  # a batch token
])
def test_one_definition_of_a_secret_what_the_config_refuses_scrub_masks(errors, secret):
    from monitor.redact import scrub

    assert any("looks like a token" in e for e in errors(f'[vault]\ntoken_env = "{secret}"\n'))
    scrubbed = scrub(f"err {secret} at /v1/x")
    assert scrubbed in ("err *** at /v1/x", "err bot*** at /v1/x"), scrubbed


# --- the sample config, written from the schema (issue 13, item 5) ------------------------

EXAMPLE = Path(__file__).resolve().parent.parent / "monitor.example.toml"
# What the example's placeholders and bot token need from the environment to load.
EXAMPLE_ENV = {"ETHERSCAN_API_KEY": "example-etherscan-key", "TELEGRAM_BOT_TOKEN": TELEGRAM_TOKEN}


def _schema_fields(table=None, path=""):
    """(dotted path, field) for every key of the schema, tables and arrays of tables included."""
    from monitor.config import SCHEMA, Table, TableList

    for key, field in (table or SCHEMA).fields.items():
        yield f"{path}{key}", field
        inner = field.table if isinstance(field, TableList) else field
        if isinstance(inner, Table):
            yield from _schema_fields(inner, f"{path}{key}.")


def test_committed_example_equals_the_one_generated_from_the_schema():
    from monitor.config.example import example_toml

    assert EXAMPLE.read_text() == example_toml(), (
        "monitor.example.toml drifted from monitor/config/schema.py: "
        "run `monitor config example > monitor.example.toml`")


def test_every_key_of_the_schema_has_a_one_line_help():
    missing = [path for path, field in _schema_fields() if not field.help.strip()]
    assert missing == []
    assert [path for path, field in _schema_fields() if "\n" in field.help] == []


def test_the_example_shows_every_key_set_or_commented_out():
    import tomllib

    from monitor.config import Table, TableList

    text = EXAMPLE.read_text()
    document = tomllib.loads(text)
    for path, field in _schema_fields():
        if isinstance(field, (Table, TableList)):
            continue
        node = document
        for part in path.split(".")[:-1]:
            node = node[part][0] if isinstance(node[part], list) else node[part]  # an array: its first entry
        key = path.rsplit(".", 1)[-1]
        assert key in node or (field.default is None and f"\n# {key} = " in text), path


def test_config_example_prints_the_committed_file(tmp_path, run_monitor):
    proc = run_monitor(["config", "example"], tmp_path, steady_cpu=False)
    assert (proc.returncode, proc.stderr) == (0, "")
    assert proc.stdout == EXAMPLE.read_text()


def test_the_example_passes_config_check_where_its_placeholders_are_set(tmp_path, run_monitor):
    # Relative paths (logs, state) resolve against the copy's folder; no key names a local
    # account (process_user is commented out), so a fresh machine loads it as it is.
    copy = tmp_path / "monitor.toml"
    copy.write_text(EXAMPLE.read_text())
    proc = run_monitor(["config", "check", "--format", "json", "--config", str(copy)], tmp_path,
                       env=EXAMPLE_ENV, steady_cpu=False)
    assert proc.returncode == 0, proc.stderr
    shown = json.loads(proc.stdout)
    assert [s["name"] for s in shown["scrapers"]] == ["uniswap"]
    assert [q["name"] for q in shown["quotas"]] == ["provider", "etherscan"]
    assert [b["name"] for b in shown["backups"]] == ["postgres"]
    assert shown["paths"]["state"] == str(tmp_path / "state")
    unset = run_monitor(["config", "check", "--config", str(copy)], tmp_path, steady_cpu=False)
    assert unset.returncode == 3 and "ETHERSCAN_API_KEY" in unset.stderr


@settings(max_examples=200, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | st.floats(allow_nan=False)
                    | st.text(), lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(), inner, max_size=3), max_leaves=8))
def test_toml_value_is_read_back_by_tomllib(value):
    import tomllib

    from monitor.config.example import toml_value

    def without_none(v):  # TOML has no null
        if isinstance(v, dict):
            return {k: without_none(x) for k, x in v.items() if x is not None}
        if isinstance(v, list):
            return [without_none(x) for x in v if x is not None]
        return v

    value = without_none({"k": value})["k"] if value is not None else ""
    assert tomllib.loads(f"k = {toml_value(value)}\n") == {"k": value}
