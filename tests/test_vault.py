"""The Vault checks and the Vault secret store, against a real OpenBao dev server.

Status codes a dev server cannot produce (DR secondary, performance standby, ...) and
answers from things that are not Vault (an HTML proxy page) are faked with `responses`.
Everything talks to 127.0.0.1 only.
"""

import logging
import os
import socket
import time

import hvac
import pytest
import requests
import responses

from monitor.checks import vault
from monitor.config import build
from monitor.results import CRITICAL, OK, UNKNOWN, WARNING
from monitor.vault_secrets import SecretError, SecretStore, read_token
from tests.openbao import dev_server, silent_peer, unused_url

ROOT = "monitor-test-root-4f1c"
SECRET_VALUE = "123456789:telegram-bot-secret-value-xyz"
FAKE_URL = "http://127.0.0.1:8200"


def vault_cfg(url: str = FAKE_URL, **overrides) -> dict:
    """The `vault` section exactly as the config loader parses it."""
    return build({"vault": {"url": url, **overrides}}, None, "/")["vault"]


@pytest.fixture(autouse=True)
def no_vault_env(monkeypatch):
    for name in ("VAULT_ADDR", "VAULT_TOKEN", "VAULT_CACERT", "BAO_ADDR", "BAO_TOKEN"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def bao():
    with dev_server(ROOT) as server:
        root = hvac.Client(url=server.addr, token=ROOT, timeout=5)
        root.secrets.kv.v2.create_or_update_secret(
            path="monitor", mount_point="secret",
            secret={"telegram_token": SECRET_VALUE, "chat": "-100123"})
        yield server


@pytest.fixture(scope="module")
def sealed_bao():
    """A server of its own, sealed once, so the session server stays usable."""
    with dev_server("sealed-root") as server:
        hvac.Client(url=server.addr, token="sealed-root", timeout=5).sys.seal()
        yield server


@pytest.fixture(scope="module")
def tls_bao():
    with dev_server("tls-root", tls=True) as server:
        yield server


def root_client(server) -> hvac.Client:
    return hvac.Client(url=server.addr, token=server.root_token, timeout=5)


def child_token(server, **kwargs) -> str:
    created = root_client(server).auth.token.create(policies=["default"], **kwargs)
    return created["auth"]["client_token"]


# --- vault: /sys/health on a real server ------------------------------------------------

def test_active_vault_is_ok_with_version_in_details(bao):
    result = vault.health(vault_cfg(bao.addr))
    assert result.status == OK, result.message
    assert result.unit == "ms" and result.value is not None and result.value >= 0
    assert result.details["version"] == requests.get(f"{bao.addr}/v1/sys/health", timeout=5).json()["version"]
    assert result.details["role"] == "active"
    assert result.details["sealed"] is False and result.details["initialized"] is True
    assert result.details["standby"] is False
    assert result.details["cluster_name"]
    assert result.details["latency_ms"] == result.value
    assert result.details["url"] == bao.addr
    assert "active" in result.message and result.details["version"] in result.message


def test_latency_above_the_warning_level_warns_on_an_active_vault(bao):
    result = vault.health(vault_cfg(bao.addr, latency_ms={"warning": 0, "critical": 100000}))
    assert result.status == WARNING
    assert (result.warning, result.critical) == (0, 100000)
    assert "slow" in result.message


def test_token_note_is_passed_on_in_details(bao):
    result = vault.health(vault_cfg(bao.addr), token_note="no token: vault-token check skipped")
    assert result.details["token"] == "no token: vault-token check skipped"


def test_sealed_vault_is_critical(sealed_bao):
    result = vault.health(vault_cfg(sealed_bao.addr))
    assert result.status == CRITICAL
    assert "sealed" in result.message
    assert result.details["sealed"] is True and result.details["role"] == "sealed"
    assert result.details["http_status"] == 503


def test_vault_addr_wins_over_the_configured_url(bao, monkeypatch):
    monkeypatch.setenv("VAULT_ADDR", bao.addr)
    result = vault.health(vault_cfg(unused_url()))
    assert result.status == OK, result.message
    assert (result.details["url"], result.details["url_from"]) == (bao.addr, "VAULT_ADDR")


# --- vault: when there is no usable answer ------------------------------------------------

def _is_short_and_clean(message: str) -> bool:
    return ("Traceback" not in message and "object at 0x" not in message
            and "HTTPConnectionPool" not in message and "Max retries" not in message
            and len(message) < 200)


def test_stopped_vault_is_critical_unreachable():
    url = unused_url()
    result = vault.health(vault_cfg(url))
    assert result.status == CRITICAL
    assert result.message == f"unreachable: connection refused ({url})"
    assert result.value is None


def test_vault_that_accepts_but_never_answers_is_critical_within_the_timeout():
    with silent_peer() as url:
        started = time.monotonic()
        result = vault.health(vault_cfg(url, timeout="2s"))
        elapsed = time.monotonic() - started
    assert result.status == CRITICAL
    assert elapsed < 3.5  # 1.5 s of slack for a busy machine; a retry or a second timeout is 4 s
    assert result.message == f"unreachable: timed out after 2s ({url})"
    assert _is_short_and_clean(result.message)


def test_token_check_on_a_vault_that_never_answers_gives_up_within_the_timeout():
    with silent_peer() as url:
        started = time.monotonic()
        result = vault.token(vault_cfg(url, timeout="2s"), "s.whatever")
        elapsed = time.monotonic() - started
    assert result.status == CRITICAL and "timed out after 2s" in result.message
    assert elapsed < 3.5  # 1.5 s of slack for a busy machine; a retry or a second timeout is 4 s


def test_url_without_scheme_is_critical_with_a_clear_message(monkeypatch):
    monkeypatch.setenv("VAULT_ADDR", "127.0.0.1:8200")
    result = vault.health(vault_cfg())
    assert result.status == CRITICAL
    assert result.message == ('invalid Vault URL "127.0.0.1:8200" (from VAULT_ADDR): '
                              "expected http://HOST:PORT or https://HOST:PORT")


def test_typo_in_the_host_name_is_critical_cannot_resolve(monkeypatch):
    real = socket.getaddrinfo

    def resolver(host, *args, **kwargs):
        if host == "vautl.internal":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    result = vault.health(vault_cfg("http://vautl.internal:8200"))
    assert result.status == CRITICAL
    assert result.message == "unreachable: DNS lookup failed for host vautl.internal (http://vautl.internal:8200)"


def test_https_to_a_plain_http_vault_is_a_tls_failure(bao):
    url = bao.addr.replace("http://", "https://")
    result = vault.health(vault_cfg(url))
    assert result.status == CRITICAL
    assert result.message.startswith("unreachable: TLS")
    assert _is_short_and_clean(result.message)


def test_untrusted_tls_certificate_is_critical(tls_bao):
    result = vault.health(vault_cfg(tls_bao.addr))
    assert result.status == CRITICAL
    assert result.message.startswith("unreachable: TLS certificate not trusted")
    assert _is_short_and_clean(result.message)


def test_ca_cert_makes_a_tls_vault_trusted(tls_bao):
    result = vault.health(vault_cfg(tls_bao.addr, ca_cert=tls_bao.ca_cert))
    assert result.status == OK, result.message


def test_verify_false_accepts_an_untrusted_certificate(tls_bao, recwarn):
    result = vault.health(vault_cfg(tls_bao.addr, verify=False))
    assert result.status == OK, result.message
    assert not [w for w in recwarn if "Unverified HTTPS" in str(w.message)]


def test_missing_ca_cert_file_is_unknown_and_named(tmp_path):
    missing = str(tmp_path / "ca.pem")
    result = vault.health(vault_cfg("https://127.0.0.1:8200", ca_cert=missing))
    assert result.status == UNKNOWN
    assert result.message == f"vault.ca_cert {missing}: no such file"


# --- vault: status codes a dev server cannot produce --------------------------------------

def _health_body(**over):
    body = {"initialized": True, "sealed": False, "standby": False, "version": "1.17.2",
            "cluster_name": "vault-cluster-x", "replication_dr_mode": "disabled"}
    body.update(over)
    return body


@pytest.mark.parametrize("code, status, role, words", [
    (200, OK, "active", "active"),
    (429, OK, "standby", "standby"),
    (473, OK, "performance standby", "performance standby"),
    (472, WARNING, "dr secondary", "DR secondary"),
    (474, CRITICAL, "standby", "cannot reach the active node"),
    (501, CRITICAL, "uninitialized", "not initialized"),
    (503, CRITICAL, "sealed", "sealed"),
    (530, CRITICAL, "removed", "removed"),
])
def test_health_status_codes_map_to_verdicts(code, status, role, words):
    standby = code in (429, 473, 474, 503)
    with responses.RequestsMock() as mock:
        mock.get(f"{FAKE_URL}/v1/sys/health", json=_health_body(standby=standby, sealed=code == 503,
                                                                initialized=code != 501), status=code)
        result = vault.health(vault_cfg())
    assert result.status == status, result.message
    assert result.details["role"] == role
    assert result.details["http_status"] == code
    assert words in result.message and "1.17.2" in result.message


@pytest.mark.parametrize("code", [200, 503, 502])
def test_an_html_answer_is_critical_unreachable(code):
    with responses.RequestsMock() as mock:
        mock.get(f"{FAKE_URL}/v1/sys/health", body="<html><body>Sign in</body></html>",
                 status=code, content_type="text/html")
        result = vault.health(vault_cfg())
    assert result.status == CRITICAL
    assert result.message.startswith(f"unreachable: HTTP {code} with a non-JSON answer")
    assert "role" not in result.details


def test_an_unexpected_code_with_vault_errors_is_critical():
    with responses.RequestsMock() as mock:
        mock.get(f"{FAKE_URL}/v1/sys/health", json={**_health_body(), "errors": ["internal error"]},
                 status=500)
        result = vault.health(vault_cfg())
    assert result.status == CRITICAL
    assert result.message == "unexpected HTTP 500 from /v1/sys/health: internal error"


# --- vault-token ----------------------------------------------------------------------------

TTL = {"warning": "7d", "critical": "1d"}


@pytest.mark.parametrize("ttl, status", [("1h", CRITICAL), ("72h", WARNING), ("720h", OK)])
def test_token_ttl_is_judged_lower_is_worse(bao, ttl, status):
    result = vault.token(vault_cfg(bao.addr, token_ttl=TTL), child_token(bao, ttl=ttl))
    assert result.status == status, result.message
    assert result.unit == "s"
    assert (result.warning, result.critical) == (7 * 86400, 86400)
    assert result.details["renewable"] is True
    assert result.details["policies"] == ["default"]
    assert result.details["expire_time"]
    assert result.details["ttl_seconds"] == result.value


def test_a_short_lived_token_says_when_it_expires(bao):
    result = vault.token(vault_cfg(bao.addr, token_ttl=TTL), child_token(bao, ttl="1h"))
    assert 3500 <= result.value <= 3600
    assert result.message.startswith("token expires in 1h") or result.message.startswith("token expires in 59m")
    assert "renew" in result.message


def test_root_token_never_expires_and_is_ok(bao):
    result = vault.token(vault_cfg(bao.addr, token_ttl=TTL), ROOT)
    assert result.status == OK
    assert "never expires" in result.message
    assert result.value is None
    assert result.details["policies"] == ["root"]


def test_token_close_to_expiry_that_is_not_renewable_says_so(bao):
    result = vault.token(vault_cfg(bao.addr, token_ttl=TTL), child_token(bao, ttl="1h", renewable=False))
    assert result.status == CRITICAL
    assert "not renewable" in result.message
    assert result.details["renewable"] is False


def test_revoked_token_is_critical_with_a_403_message(bao):
    secret = child_token(bao, ttl="1h")
    hvac.Client(url=bao.addr, token=secret, timeout=5).auth.token.revoke_self()
    result = vault.token(vault_cfg(bao.addr), secret)
    assert result.status == CRITICAL
    assert result.message == "token revoked or lacks permission to look itself up (HTTP 403)"


def test_token_check_on_a_stopped_vault_is_critical_unreachable():
    url = unused_url()
    result = vault.token(vault_cfg(url), "s.whatever")
    assert result.status == CRITICAL
    assert result.message == f"unreachable: connection refused ({url})"


def test_token_check_on_a_sealed_vault_is_critical(sealed_bao):
    result = vault.token(vault_cfg(sealed_bao.addr), "sealed-root")
    assert result.status == CRITICAL and "sealed" in result.message


def test_lookup_self_id_is_the_token_and_never_copied():
    secret = "hvs.CAESIFakeTokenValueThatMustNotLeak0123456789"
    answer = {"data": {"id": secret, "accessor": "acc123", "policies": ["default", "monitor"],
                       "ttl": 3600, "expire_time": "2026-11-26T10:00:00Z", "renewable": False,
                       "type": "service"}}
    with responses.RequestsMock() as mock:
        mock.get(f"{FAKE_URL}/v1/auth/token/lookup-self", json=answer)
        result = vault.token(vault_cfg(), secret)
    assert result.status == CRITICAL
    assert "id" not in result.details and secret not in repr(result)
    assert result.details["accessor"] == "acc123"


def test_a_short_dev_token_does_not_garble_the_message():
    answer = {"data": {"id": "root", "accessor": "a", "policies": ["root"], "ttl": 0,
                       "expire_time": None, "renewable": False}}
    with responses.RequestsMock() as mock:
        mock.get(f"{FAKE_URL}/v1/auth/token/lookup-self", json=answer)
        result = vault.token(vault_cfg(), "root")
    assert result.message == "token never expires (no TTL, like a root token)"


def test_the_token_never_appears_in_results_or_logs(bao, sealed_bao, caplog):
    caplog.set_level(logging.DEBUG)
    secret = child_token(bao, ttl="1h")
    revoked = child_token(bao, ttl="1h")
    hvac.Client(url=bao.addr, token=revoked, timeout=5).auth.token.revoke_self()
    results = [
        vault.token(vault_cfg(bao.addr), secret),
        vault.token(vault_cfg(bao.addr), revoked),
        vault.token(vault_cfg(sealed_bao.addr), secret),
        vault.token(vault_cfg(unused_url()), secret),
        vault.health(vault_cfg(bao.addr), token_note="token from $VAULT_TOKEN"),
    ]
    errors = []
    for ref in ("secret/monitor#nope", "secret/nothing#x", "nomount/monitor#x"):
        try:
            SecretStore(vault_cfg(bao.addr), secret).get(ref)
        except SecretError as exc:
            errors.append(str(exc))
    assert "lookup-self" in caplog.text  # urllib3's debug lines were captured
    text = repr(results) + repr(errors) + caplog.text
    assert secret not in text and revoked not in text
    assert secret[2:] not in text  # not even without its "s." / "hvs." prefix


# --- secrets from KV v2 ---------------------------------------------------------------------

@pytest.fixture
def kv_reads(monkeypatch):
    """Count the KV v2 reads that reach Vault."""
    from hvac.api.secrets_engines.kv_v2 import KvV2

    calls = []
    real = KvV2.read_secret_version

    def counting(self, *args, **kwargs):
        calls.append(kwargs.get("path"))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(KvV2, "read_secret_version", counting)
    return calls


def test_secret_store_reads_a_kv2_value(bao):
    assert SecretStore(vault_cfg(bao.addr), ROOT).get("secret/monitor#telegram_token") == SECRET_VALUE


def test_secret_store_reads_each_path_once_per_run(bao, kv_reads):
    store = SecretStore(vault_cfg(bao.addr), ROOT)
    assert store.get("secret/monitor#telegram_token") == SECRET_VALUE
    assert store.get("secret/monitor#telegram_token") == SECRET_VALUE
    assert store.get("secret/monitor#chat") == "-100123"
    with pytest.raises(SecretError):
        store.get("secret/monitor#missing")
    assert kv_reads == ["monitor"]


def _assert_clean(message: str, token: str = ROOT):
    assert SECRET_VALUE not in message and token not in message and "Traceback" not in message


def test_missing_key_raises_secret_error_naming_the_key_not_the_value(bao):
    with pytest.raises(SecretError) as caught:
        SecretStore(vault_cfg(bao.addr), ROOT).get("secret/monitor#telegram")
    assert str(caught.value) == 'secret/monitor: no key "telegram" (keys there: chat, telegram_token)'
    _assert_clean(str(caught.value))


def test_missing_path_raises_secret_error(bao):
    with pytest.raises(SecretError) as caught:
        SecretStore(vault_cfg(bao.addr), ROOT).get("secret/nothing-here#telegram_token")
    assert str(caught.value).startswith("secret/nothing-here: no such secret")
    _assert_clean(str(caught.value))


def test_missing_mount_raises_secret_error(bao):
    with pytest.raises(SecretError) as caught:
        SecretStore(vault_cfg(bao.addr), ROOT).get("kv/monitor#telegram_token")
    assert str(caught.value) == 'kv/monitor: no secrets engine is mounted at "kv"'


def test_permission_denied_raises_secret_error(bao):
    weak = child_token(bao, ttl="1h")
    with pytest.raises(SecretError) as caught:
        SecretStore(vault_cfg(bao.addr), weak).get("secret/monitor#telegram_token")
    assert str(caught.value).startswith("secret/monitor: permission denied")
    _assert_clean(str(caught.value), weak)


def test_unreachable_vault_raises_secret_error():
    url = unused_url()
    with pytest.raises(SecretError) as caught:
        SecretStore(vault_cfg(url), ROOT).get("secret/monitor#telegram_token")
    assert str(caught.value) == f"secret/monitor: Vault unreachable at {url}: connection refused"


def test_sealed_vault_raises_secret_error(sealed_bao):
    with pytest.raises(SecretError, match="sealed"):
        SecretStore(vault_cfg(sealed_bao.addr), "sealed-root").get("secret/monitor#telegram_token")


@pytest.mark.parametrize("ref", ["monitor#telegram_token", "secret/monitor", "secret/#key", "secret/monitor#"])
def test_malformed_secret_reference_raises_secret_error(ref):
    with pytest.raises(SecretError, match='expected "mount/path#key"'):
        SecretStore(vault_cfg(), ROOT).get(ref)


def test_secret_store_without_token_says_where_to_put_one():
    with pytest.raises(SecretError, match=r"no Vault token \(set \$VAULT_TOKEN or vault.token_file\)"):
        SecretStore(vault_cfg(), None).get("secret/monitor#telegram_token")


def test_secret_store_repr_hides_the_token():
    assert ROOT not in repr(SecretStore(vault_cfg(), ROOT))


# --- read_token -----------------------------------------------------------------------------

def _token_file(tmp_path, content: str, mode: int = 0o600) -> str:
    path = tmp_path / "vault-token"
    path.write_text(content)
    os.chmod(path, mode)
    return str(path)


def test_read_token_from_the_environment(tmp_path):
    cfg = vault_cfg(token_file=_token_file(tmp_path, "s.from-file"))
    assert read_token(cfg, {"VAULT_TOKEN": "s.from-env"}) == ("s.from-env", [])


def test_read_token_from_a_custom_environment_variable():
    assert read_token(vault_cfg(token_env="MONITOR_VAULT_TOKEN"), {"MONITOR_VAULT_TOKEN": "s.x"}) == ("s.x", [])


def test_read_token_falls_back_to_the_file_when_the_variable_is_empty(tmp_path):
    cfg = vault_cfg(token_file=_token_file(tmp_path, "  s.from-file\n"))
    assert read_token(cfg, {"VAULT_TOKEN": ""}) == ("s.from-file", [])


def test_read_token_from_an_empty_file_is_none_with_a_warning(tmp_path):
    path = _token_file(tmp_path, "\n")
    assert read_token(vault_cfg(token_file=path), {}) == (None, [f"vault.token_file {path} is empty"])


def test_read_token_from_a_missing_file_is_none_with_a_warning(tmp_path):
    path = str(tmp_path / "absent")
    assert read_token(vault_cfg(token_file=path), {}) == (None, [f"vault.token_file {path}: no such file"])


def test_group_readable_token_file_warns_to_chmod_600(tmp_path):
    path = _token_file(tmp_path, "s.secret-in-file", mode=0o640)
    token, warnings = read_token(vault_cfg(token_file=path), {})
    assert token == "s.secret-in-file"
    assert warnings == [f"vault.token_file {path} is accessible by group or others (mode 0640); "
                        f"run: chmod 600 {path}"]
    assert "s.secret-in-file" not in warnings[0]


def test_read_token_with_neither_source_is_none():
    assert read_token(vault_cfg(), {}) == (None, [])


# --- redirects never carry the token to another host (issue 12, item 8) ---------------------

REDIRECT_TOKEN = "hvs.redirect-test-token-0123456789abcdef"
LOOKUP = {"data": {"ttl": 30 * 86400, "expire_time": "2099-01-01T00:00:00Z", "renewable": True,
                   "policies": ["monitor"], "accessor": "acc", "type": "service"}}
HEALTHY = {"initialized": True, "sealed": False, "standby": False, "version": "2.0.0"}
KV = {"data": {"data": {"telegram_token": "value-from-the-other-host"}, "metadata": {"version": 1}}}
PATHS = {"/v1/sys/health": HEALTHY, "/v1/auth/token/lookup-self": LOOKUP, "/v1/secret/data/monitor": KV}


def test_a_redirect_to_another_host_is_a_vault_error_and_the_token_is_not_sent_there():
    from tests.loopback import redirect, reply, serve

    with serve() as front, serve() as elsewhere:
        for path, body in PATHS.items():
            elsewhere.route(path, reply(json=body))
            front.route(path, redirect(elsewhere.url(path), 307))
        cfg = vault_cfg(front.url("").rstrip("/"))
        health = vault.health(cfg)
        token = vault.token(cfg, REDIRECT_TOKEN)
        with pytest.raises(SecretError) as read:
            SecretStore(cfg, REDIRECT_TOKEN).get("secret/monitor#telegram_token")
        assert elsewhere.received == []  # not one request: no X-Vault-Token, no health probe
        assert len(front.received) == 3
    other = f"http://127.0.0.1:{elsewhere.port}"
    assert health.status == CRITICAL
    assert health.message == (f"Vault redirected (HTTP 307) to another host, {other}; not followed with "
                              "the token (set vault.url to the node that answers)")
    assert token.status == CRITICAL and token.message.startswith("cannot look up the token: Vault redirected")
    assert str(read.value).startswith(f"secret/monitor: Vault redirected (HTTP 307) to another host, {other}")


@pytest.mark.parametrize("elsewhere", ["https://127.0.0.1:{port}", "http://localhost:{port}",
                                       "http://127.0.0.1:{other}"])
def test_a_redirect_to_another_scheme_host_or_port_is_refused(elsewhere):
    from tests.loopback import closed_port, redirect, serve

    with serve() as front:
        target = elsewhere.format(port=front.port, other=closed_port()) + "/v1/auth/token/lookup-self"
        front.route("/v1/auth/token/lookup-self", redirect(target, 307))
        result = vault.token(vault_cfg(front.url("").rstrip("/")), REDIRECT_TOKEN)
    assert result.status == CRITICAL and "Vault redirected (HTTP 307) to another host" in result.message


def test_a_redirect_to_the_same_origin_is_followed_with_the_token():
    from tests.loopback import redirect, reply, serve

    with serve() as node:  # a standby forwarding to another path of itself
        for path, body in PATHS.items():
            node.route(path + "/here", reply(json=body))
            node.route(path, redirect(node.url(path + "/here"), 307))
        cfg = vault_cfg(node.url("").rstrip("/"))
        assert vault.health(cfg).status == OK
        token = vault.token(cfg, REDIRECT_TOKEN)
        value = SecretStore(cfg, REDIRECT_TOKEN).get("secret/monitor#telegram_token")
        followed = [headers for path, headers in node.received if "/here" in path]
    assert token.status == OK and token.value == 30 * 86400
    assert value == "value-from-the-other-host"
    assert [h.get("X-Vault-Token") for h in followed] == [None, REDIRECT_TOKEN, REDIRECT_TOKEN]


def test_a_same_origin_redirect_loop_ends_after_three_hops():
    from tests.loopback import redirect, serve

    with serve() as node:
        node.route("/v1/auth/token/lookup-self", redirect(node.url("/v1/auth/token/lookup-self"), 307))
        result = vault.token(vault_cfg(node.url("").rstrip("/")), REDIRECT_TOKEN)
        hops = len(node.received)
    assert result.status == CRITICAL and result.message.startswith("unreachable: too many redirects (more than 3)")
    assert hops == 4
