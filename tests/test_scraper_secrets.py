"""Can the scraper read its secrets (issue 17, item 4): `vault-secrets` and `vault-token:scraper`
against a real OpenBao dev server, with KV paths written by root, a restrictive policy written
with `bao policy write`, and scraper tokens created with it."""

import json
import logging
import math
import os
import subprocess

import hvac
import pytest

from monitor import checks as check_modules
from monitor.checks import scraper_secrets
from monitor.config import ConfigError, build
from monitor.results import CRITICAL, OK, UNKNOWN, WARNING
from monitor.runner import run_checks
from tests.conftest import VERDICT_CONFIGS, monitor_json
from tests.openbao import bao_binary, dev_server, silent_peer, unused_url

ROOT = "scraper-secrets-root-9e2b"
# Values that must never show anywhere: long and distinct, so a sweep cannot miss them.
API_KEY = "sk-live-SCRAPER-api-key-7c4e1f9a0b2d"
RPC_URL = "https://mainnet.example/v3/RPC-secret-path-55aa31"
ADMIN_KEY = "sk-live-ADMIN-only-key-3b8d6e"
OTHER = "unrelated-value-in-partial-19fe"
ALL_VALUES = (API_KEY, RPC_URL, ADMIN_KEY, OTHER)

# What the scraper may read: its own path, plus paths it may read that are missing, lack the
# key or hold an empty value (a policy without read on a missing path gets 403, not 404).
POLICY = """
path "secret/data/scraper" { capabilities = ["read"] }
path "secret/data/gone"    { capabilities = ["read"] }
path "secret/data/partial" { capabilities = ["read"] }
path "secret/data/blank"   { capabilities = ["read"] }
"""
READABLE = ["secret/scraper#api_key", "secret/scraper#rpc_url"]
FORBIDDEN, MISSING = "secret/admin#api_key", "secret/gone#api_key"
NO_KEY, EMPTY = "secret/partial#api_key", "secret/blank#api_key"
EVERY = READABLE + [FORBIDDEN, MISSING, NO_KEY, EMPTY]


@pytest.fixture(autouse=True)
def no_vault_env(monkeypatch):
    for name in ("VAULT_ADDR", "VAULT_TOKEN", "BAO_ADDR", "BAO_TOKEN", "SCRAPER_VAULT_TOKEN"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def bao():
    with dev_server(ROOT) as server:
        root = hvac.Client(url=server.addr, token=ROOT, timeout=5)
        for path, secret in (("scraper", {"api_key": API_KEY, "rpc_url": RPC_URL}),
                             ("admin", {"api_key": ADMIN_KEY}), ("partial", {"other": OTHER}),
                             ("blank", {"api_key": "  "})):
            root.secrets.kv.v2.create_or_update_secret(path=path, mount_point="secret", secret=secret)
        env = {**os.environ, "BAO_ADDR": server.addr, "BAO_TOKEN": ROOT, "HOME": os.environ.get("HOME", "/")}
        written = subprocess.run([bao_binary(), "policy", "write", "scraper", "-"], input=POLICY, text=True,
                                 capture_output=True, env=env, timeout=30)
        assert written.returncode == 0, written.stderr
        yield server


def scraper_token(server, ttl="720h", renewable=True) -> str:
    root = hvac.Client(url=server.addr, token=ROOT, timeout=5)
    return root.auth.token.create(policies=["scraper"], ttl=ttl, renewable=renewable)["auth"]["client_token"]


def config(url, **vault) -> dict:
    return build({"vault": {"url": url, **vault}}, None, "/")


def run_vault(cfg: dict) -> dict:
    """Every `vault` check of `monitor health --only vault`, run as a run runs them, by id."""
    from monitor.results import with_identity

    results = run_checks(check_modules.health_checks(cfg, None, {"vault"})).results
    assert all(r.id for r in results)
    return {r.id: with_identity(r, r.id, r.kind, r.duration_ms) for r in results}


def _assert_no_value(*texts):
    text = "\n".join(texts)
    for value in ALL_VALUES:
        assert value not in text


# --- vault-secrets ---------------------------------------------------------------------------

def test_each_unreadable_secret_is_named_with_its_reason_and_the_readable_ones_counted(bao, monkeypatch):
    monkeypatch.setenv("SCRAPER_VAULT_TOKEN", scraper_token(bao))
    result = run_vault(config(bao.addr, secrets=EVERY, scraper_token_env="SCRAPER_VAULT_TOKEN"))["vault-secrets"]
    assert result.status == CRITICAL
    assert result.value == 2 and result.kind == "vault"
    assert result.message.startswith("4 of 6 secret(s) not readable with the scraper's token: ")
    assert (f"{FORBIDDEN} forbidden (HTTP 403: the token's policy lacks read on secret/data/admin, "
            "or the token is revoked)") in result.message
    assert f"{MISSING} missing (HTTP 404)" in result.message
    assert f'{NO_KEY} has no key "api_key"' in result.message
    assert f"{EMPTY} is empty" in result.message
    assert result.message.endswith("(2 readable)")
    assert result.details["readable"] == READABLE
    assert {ref: why["reason"] for ref, why in result.details["unreadable"].items()} == {
        FORBIDDEN: "forbidden", MISSING: "missing", NO_KEY: "no key", EMPTY: "empty"}
    assert result.details["token"] == "scraper's, from $SCRAPER_VAULT_TOKEN"
    _assert_no_value(json.dumps(result.to_json()), repr(result))


def test_all_readable_is_ok_and_says_how_many(bao, monkeypatch):
    monkeypatch.setenv("SCRAPER_VAULT_TOKEN", scraper_token(bao))
    result = run_vault(config(bao.addr, secrets=READABLE, scraper_token_env="SCRAPER_VAULT_TOKEN"))["vault-secrets"]
    assert result.status == OK
    assert result.message == "2 of 2 secret(s) readable with the scraper's token"
    assert result.value == 2


def test_without_a_scraper_token_monitors_own_token_reads_them_and_no_scraper_ttl_is_checked(bao, monkeypatch):
    monkeypatch.setenv("VAULT_TOKEN", ROOT)  # root may read secret/admin, which the scraper's policy forbids
    results = run_vault(config(bao.addr, secrets=READABLE + [FORBIDDEN]))
    assert set(results) == {"vault", "vault-token", "vault-secrets"}
    assert results["vault-secrets"].status == OK
    assert results["vault-secrets"].message == "3 of 3 secret(s) readable with monitor's token"


def test_the_scraper_token_from_a_file_is_used(bao, tmp_path):
    path = tmp_path / "scraper.token"
    path.write_text(scraper_token(bao) + "\n")
    path.chmod(0o600)
    result = run_vault(config(bao.addr, secrets=[READABLE[0], FORBIDDEN],
                              scraper_token_file=str(path)))["vault-secrets"]
    assert result.status == CRITICAL and result.value == 1
    assert result.details["token"] == f"scraper's, from {path}"


def test_the_environment_variable_wins_over_the_file(bao, tmp_path, monkeypatch):
    path = tmp_path / "scraper.token"
    path.write_text(ROOT)  # root could read secret/admin
    path.chmod(0o600)
    monkeypatch.setenv("SCRAPER_VAULT_TOKEN", scraper_token(bao))
    result = run_vault(config(bao.addr, secrets=[FORBIDDEN], scraper_token_env="SCRAPER_VAULT_TOKEN",
                              scraper_token_file=str(path)))["vault-secrets"]
    assert result.status == CRITICAL and "forbidden" in result.message


def test_a_scraper_token_file_others_can_read_is_used_with_a_warning_to_chmod_600(bao, tmp_path, caplog):
    path = tmp_path / "scraper.token"
    secret = scraper_token(bao)
    path.write_text(secret)
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="monitor"):
        result = run_vault(config(bao.addr, secrets=READABLE, scraper_token_file=str(path)))["vault-secrets"]
    assert result.status == OK
    assert (f"vault: vault.scraper_token_file {path} is accessible by group or others (mode 0644); "
            f"run: chmod 600 {path}") in caplog.messages
    assert secret not in caplog.text


def test_a_missing_scraper_token_is_unknown_naming_what_was_tried_not_monitors_token(bao, tmp_path, monkeypatch):
    monkeypatch.setenv("VAULT_TOKEN", ROOT)  # there, but not the scraper's: never used in its place
    missing = tmp_path / "absent.token"
    results = run_vault(config(bao.addr, secrets=READABLE, scraper_token_env="SCRAPER_VAULT_TOKEN",
                               scraper_token_file=str(missing)))
    why = f"$SCRAPER_VAULT_TOKEN is not set; vault.scraper_token_file {missing}: no such file"
    assert results["vault-secrets"].status == UNKNOWN
    assert results["vault-secrets"].message == f"cannot check 2 secret(s): no token ({why})"
    assert results["vault-token:scraper"].status == UNKNOWN
    assert results["vault-token:scraper"].message == f"no scraper token to check: {why}"


def test_a_revoked_scraper_token_makes_every_secret_forbidden_and_its_ttl_critical(bao, monkeypatch):
    secret = scraper_token(bao)
    hvac.Client(url=bao.addr, token=secret, timeout=5).auth.token.revoke_self()
    monkeypatch.setenv("SCRAPER_VAULT_TOKEN", secret)
    results = run_vault(config(bao.addr, secrets=READABLE, scraper_token_env="SCRAPER_VAULT_TOKEN"))
    assert results["vault-secrets"].status == CRITICAL and results["vault-secrets"].value == 0
    assert results["vault-secrets"].message.startswith("2 of 2 secret(s) not readable")
    assert results["vault-token:scraper"].status == CRITICAL
    assert results["vault-token:scraper"].message == "token revoked or lacks permission to look itself up (HTTP 403)"


def test_an_unreachable_vault_is_unknown_not_a_verdict_on_the_secrets(monkeypatch):
    url = unused_url()
    result = scraper_secrets.secrets(config(url)["vault"] | {"secrets": READABLE}, "s.some-token", "monitor's")
    assert result.status == UNKNOWN
    assert result.message == (f"2 could not be checked: secret/scraper: Vault unreachable at {url}: connection "
                              f"refused; secret/scraper: Vault unreachable at {url}: connection refused "
                              "(0 readable)")
    assert check_modules.exported(result.replace(id="vault-secrets", kind="vault")) == []


def test_the_paths_share_one_timeout_each_read_getting_only_what_is_left(bao, monkeypatch):
    from hvac.api.secrets_engines.kv_v2 import KvV2

    reads, real = [], KvV2.read_secret_version
    monkeypatch.setattr(KvV2, "read_secret_version",
                        lambda self, *a, **k: reads.append(k["path"]) or real(self, *a, **k))
    ticks = iter(range(0, 100, 3))  # each look at the clock: 3 s later; vault.timeout is 5 s
    cfg = config(bao.addr, secrets=[READABLE[0], NO_KEY, MISSING], timeout="5s")["vault"]
    result = scraper_secrets.secrets(cfg, ROOT, "monitor's", clock=lambda: next(ticks))
    assert reads == ["scraper"]  # read at 3 s; at 6 s the 5 s were spent: the others were not asked
    assert result.status == UNKNOWN and result.value == 1
    assert "secret/partial: not read: vault.timeout (5s) was spent on the paths before it" in result.message


def test_a_vault_that_never_answers_ends_the_check_with_the_others_unknown(monkeypatch):
    with silent_peer() as url:
        ticks = iter([0.0, 0.1, 9.0, 9.1])  # the first read waits out its timeout (the clock says 9 s)
        cfg = config(url, secrets=[READABLE[0], NO_KEY], timeout="1s")["vault"]
        result = scraper_secrets.secrets(cfg, "s.x", "monitor's", clock=lambda: next(ticks))
    assert result.status == UNKNOWN
    assert "secret/scraper: Vault unreachable" in result.message and "timed out after 1s" in result.message
    assert "secret/partial: not read: vault.timeout (1s) was spent" in result.message


# --- vault-token:scraper ------------------------------------------------------------------------

def test_a_scraper_token_close_to_expiry_warns_with_monitors_wording(bao, monkeypatch):
    monkeypatch.setenv("SCRAPER_VAULT_TOKEN", scraper_token(bao, ttl="48h"))
    result = run_vault(config(bao.addr, scraper_token_env="SCRAPER_VAULT_TOKEN"))["vault-token:scraper"]
    assert result.status == WARNING
    assert (result.warning, result.critical) == (7 * 86400, 86400)  # vault.token_ttl's defaults
    assert result.message.split(" and ")[0] in ("token expires in 2d", "token expires in 1d23h")  # a second gone
    assert result.message.endswith("and is renewable: renew it (bao token renew) or issue a new one")
    assert result.details["policies"] == ["default", "scraper"]
    assert check_modules.exported(result) == [
        ("monitor_vault_scraper_token_ttl_seconds", scraper_secrets.METRICS[
            "monitor_vault_scraper_token_ttl_seconds"][0], (), {}, result.value)]


def test_a_scraper_token_that_is_not_renewable_and_nearly_expired_is_critical(bao, monkeypatch):
    monkeypatch.setenv("SCRAPER_VAULT_TOKEN", scraper_token(bao, ttl="1h", renewable=False))
    result = run_vault(config(bao.addr, scraper_token_env="SCRAPER_VAULT_TOKEN",
                              token_ttl={"warning": "3h", "critical": "2h"}))["vault-token:scraper"]
    assert result.status == CRITICAL
    assert result.message.endswith("and is not renewable: issue a new one before then")


def test_a_scraper_token_that_never_expires_is_ok_and_exported_as_infinity(bao, monkeypatch):
    monkeypatch.setenv("SCRAPER_VAULT_TOKEN", ROOT)
    result = run_vault(config(bao.addr, scraper_token_env="SCRAPER_VAULT_TOKEN"))["vault-token:scraper"]
    assert result.status == OK and "never expires" in result.message
    assert [s[-1] for s in check_modules.exported(result)] == [math.inf]


# --- exports, config -------------------------------------------------------------------------------

def test_each_reference_with_a_verdict_is_a_readable_sample(bao, monkeypatch):
    monkeypatch.setenv("SCRAPER_VAULT_TOKEN", scraper_token(bao))
    result = run_vault(config(bao.addr, secrets=EVERY, scraper_token_env="SCRAPER_VAULT_TOKEN"))["vault-secrets"]
    samples = {labels["secret"]: value for name, _, names, labels, value in check_modules.exported(result)
               if name == "monitor_vault_secrets_readable" and names == ("secret",)}
    assert samples == {READABLE[0]: 1, READABLE[1]: 1, FORBIDDEN: 0, MISSING: 0, NO_KEY: 0, EMPTY: 0}


def test_check_ids_follow_the_config():
    assert scraper_secrets.check_ids(config("http://127.0.0.1:8200")) == []
    assert scraper_secrets.check_ids(config("http://127.0.0.1:8200", secrets=READABLE)) == ["vault-secrets"]
    assert scraper_secrets.check_ids(config("http://127.0.0.1:8200", secrets=READABLE,
                                            scraper_token_file="/etc/scraper.token")) == [
        "vault-secrets", "vault-token:scraper"]
    assert check_modules.health_checks(config("http://127.0.0.1:8200"), None, {"vault"})[-1].id == "vault"


@pytest.mark.parametrize("entry", ["secret/scraper", "scraper#api_key", "secret/#api_key", "secret//#k",
                                   "secret/scraper#", ""])
def test_a_malformed_secret_reference_is_a_config_error_naming_the_key_and_the_entry(entry):
    with pytest.raises(ConfigError) as caught:
        config("http://127.0.0.1:8200", secrets=["secret/ok#key", entry])
    assert caught.value.errors == [f'vault.secrets[1]: expected "mount/path#key" (KV v2), like '
                                   f'"secret/scraper#api_key", got "{entry}"']


def test_a_malformed_reference_exits_3_with_one_line(tmp_path, run_monitor):
    proc = run_monitor(["health", "--format", "json"], tmp_path,
                       config='[vault]\nurl = "http://127.0.0.1:1"\nsecrets = ["secret/scraper"]\n')
    assert proc.returncode == 3
    assert proc.stderr.strip().splitlines() == [
        'config error: vault.secrets[0]: expected "mount/path#key" (KV v2), like "secret/scraper#api_key", '
        'got "secret/scraper"']


# --- end to end: no value anywhere -------------------------------------------------------------------

@pytest.mark.parametrize("source", ["env", "file"])
def test_no_secret_value_reaches_stdout_stderr_logs_state_or_the_textfile(bao, tmp_path, run_monitor, source):
    secret = scraper_token(bao, ttl="48h")
    textfiles = tmp_path / "textfiles"
    textfiles.mkdir()
    refs = ", ".join(f'"{ref}"' for ref in EVERY)
    config_text = VERDICT_CONFIGS["ok"] + f'[vault]\nurl = "{bao.addr}"\nsecrets = [{refs}]\n'
    env = {"VAULT_TOKEN": ROOT}
    if source == "env":
        config_text += 'scraper_token_env = "SCRAPER_VAULT_TOKEN"\n'
        env["SCRAPER_VAULT_TOKEN"] = secret
    else:
        (tmp_path / "scraper.token").write_text(secret)
        (tmp_path / "scraper.token").chmod(0o600)
        config_text += 'scraper_token_file = "scraper.token"\n'
    proc = run_monitor(["health", "--format", "json", "-vv", "--textfile-dir", str(textfiles)], tmp_path,
                       config=config_text, env=env)
    assert proc.returncode == 2, proc.stderr
    found = monitor_json(proc.stdout)["checks"]
    assert found["vault-secrets"]["status"] == CRITICAL and found["vault-secrets"]["value"] == 2
    assert found["vault-token:scraper"]["status"] == WARNING
    assert found["vault"]["status"] == OK and found["vault-token"]["status"] == OK
    prom = (textfiles / "monitor_health.prom").read_text()
    assert f'monitor_vault_secrets_readable{{secret="{FORBIDDEN}"}} 0.0' in prom
    assert f'monitor_vault_secrets_readable{{secret="{READABLE[0]}"}} 1.0' in prom
    assert "monitor_vault_scraper_token_ttl_seconds " in prom
    check = run_monitor(["config", "check", "--format", "text"], tmp_path, config=config_text, env=env)
    texts = [proc.stdout, proc.stderr, check.stdout, check.stderr]
    for folder in (tmp_path / "logs", tmp_path / "state", textfiles):
        texts += [p.read_bytes().decode("utf-8", "replace") for p in folder.rglob("*") if p.is_file()]
    everything = "\n".join(texts)
    assert "lookup-self" in everything  # -vv: urllib3's request lines were written
    assert "vault-secrets" in (tmp_path / "logs" / "health.log").read_text()
    _assert_no_value(everything)
    assert secret not in everything and secret[4:] not in everything


def test_config_check_says_where_the_scraper_token_comes_from_never_its_value(tmp_path):
    from monitor.config import exposure_warnings, load, secret_sources

    token_file = tmp_path / "scraper.token"
    token_file.write_text("s.scraper-token-in-a-file")
    path = tmp_path / "monitor.toml"
    path.write_text('[vault]\nsecrets = ["secret/scraper#api_key"]\nscraper_token_env = "SCRAPER_VAULT_TOKEN"\n'
                    'scraper_token_file = "scraper.token"\n')
    path.chmod(0o644)
    cfg = load(str(path), None)
    sources = secret_sources(cfg, {"SCRAPER_VAULT_TOKEN": "s.scraper-token-in-the-env"})
    assert sources["vault.scraper_token_env"] == "$SCRAPER_VAULT_TOKEN (set, ****)"
    assert sources["vault.scraper_token_file"] == f"{token_file} (present)"
    assert "s.scraper" not in repr(sources)
    assert exposure_warnings(str(path), cfg) == [
        f"{path} is readable by others (mode 0644) and names vault.scraper_token_file; run: chmod o-r {path}"]


def test_monitor_cron_says_an_env_only_scraper_token_is_not_in_cron_without_printing_it(tmp_path, run_monitor):
    secret = "s.scraper-token-only-in-the-shell"
    config_text = '[vault]\ntoken_file = "vault.token"\nscraper_token_env = "SCRAPER_VAULT_TOKEN"\n'
    proc = run_monitor(["cron"], tmp_path, config=config_text, env={"SCRAPER_VAULT_TOKEN": secret})
    assert proc.returncode == 0, proc.stderr
    assert ("# Vault: $SCRAPER_VAULT_TOKEN (the scraper's token) is not in cron's environment: set "
            "vault.scraper_token_file (chmod 600)") in proc.stdout.splitlines()
    assert "# or uncomment this line with it: SCRAPER_VAULT_TOKEN=replace-with-the-scraper-token" in proc.stdout
    assert secret not in proc.stdout + proc.stderr
    with_file = run_monitor(["cron"], tmp_path, config=config_text + 'scraper_token_file = "scraper.token"\n')
    assert "SCRAPER_VAULT_TOKEN" not in with_file.stdout


def test_a_secret_with_hundreds_of_keys_gives_a_bounded_reason(bao):
    root = hvac.Client(url=bao.addr, token=ROOT, timeout=5)
    root.secrets.kv.v2.create_or_update_secret(path="crowded", mount_point="secret",
                                               secret={f"key_{i:05d}": "v" for i in range(200)})
    cfg = config(bao.addr, secrets=["secret/crowded#api_key"])["vault"]
    result = scraper_secrets.secrets(cfg, ROOT, "monitor's")
    assert result.status == CRITICAL
    assert result.message == ('1 of 1 secret(s) not readable with monitor\'s token: secret/crowded#api_key '
                              'has no key "api_key" (0 readable)')
    why = result.details["unreadable"]["secret/crowded#api_key"]["why"]
    assert len(why) == scraper_secrets.MAX_WHY and why.startswith('secret/crowded: no key "api_key" (keys there: ')
