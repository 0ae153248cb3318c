"""tls:<host:port> checks (issue 17, item 3): certificates made with `cryptography`, served by
loopback HTTPS servers to the real probes, quotas and Vault client of a health run."""

import concurrent.futures
import datetime as dt
import json
import socket
import ssl
import subprocess
import sys
import threading
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from monitor import checks, config as monitor_config, http
from monitor.alerts import messages
from monitor.checks import tls as tls_check
from monitor.peer_certs import PeerCertificates, read_der, unverified_leaf
from monitor.results import CRITICAL, OK, UNKNOWN, WARNING
from monitor.runner import run_checks
from monitor.state import Carried
from tests.conftest import clean_env
from tests.loopback import closed_port, reply, server  # noqa: F401 - a fixture
from tests.test_proxy import _proxied, proxy  # noqa: F401 - a fixture
from tests.tls_certs import DAY, Authority, https_server, https_url

NOW = dt.datetime.now(dt.timezone.utc)
HEALTH = {"status": "ok"}
QUOTA = reply(headers={"X-R": "90"}, json={})


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    return Authority(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def certs(ca):
    """Leaf certificates by name: (cert file, key file, certificate)."""
    return {name: ca.leaf(name, NOW + start, NOW + end) for name, start, end in (
        ("two_days", -DAY, 2 * DAY), ("ten_days", -DAY, 10 * DAY), ("twenty_days", -DAY, 20 * DAY),
        ("yesterday", -30 * DAY, -DAY), ("not_yet", DAY, 30 * DAY))}


def health(raw: dict, folder, only=("scraper", "quota", "vault", "tls")) -> dict:
    """Run the health checks of `raw` (a config) in-process: {check id: Result}."""
    config = monitor_config.build(raw, None, str(folder))
    return {r.id: r for r in run_checks(checks.health_checks(config, Carried(), set(only))).results}


def tls_results(results: dict) -> list:
    return [r for r in results.values() if r.id.startswith("tls:")]


def scrapers(*entries) -> dict:
    return {"scrapers": [{"name": name, "url": url, **extra} for name, url, extra in entries]}


@pytest.fixture
def serving(certs):
    """serving(cert name) -> a loopback HTTPS server showing it, answering /health and /quota."""
    opened = []

    def start(name):
        cert, key, _ = certs[name]
        context = https_server(cert, key)
        server = context.__enter__()
        opened.append(context)
        server.route("/health", reply(json=HEALTH))
        server.route("/quota", QUOTA)
        return server

    yield start
    for context in opened:
        context.__exit__(None, None, None)


# --- the verdicts -------------------------------------------------------------------------

@pytest.mark.parametrize("name, status", [("two_days", CRITICAL), ("ten_days", WARNING), ("twenty_days", OK)])
def test_time_left_is_judged_with_the_default_tls_expiry(serving, certs, ca, tmp_path, name, status):
    server = serving(name)
    results = health(scrapers(("api", https_url(server), {"ca_cert": str(ca.path)})), tmp_path)
    tls = results[f"tls:127.0.0.1:{server.port}"]
    not_after = certs[name][2].not_valid_after_utc
    left = (not_after - dt.datetime.now(dt.timezone.utc)).total_seconds()
    assert tls.status == status and results["scraper:api"].status == OK
    assert abs(tls.details["cert_expires_in_seconds"] - left) < 600  # generous: a busy CI machine
    assert tls.details["not_after"] == not_after.isoformat()
    assert f"on {not_after:%Y-%m-%d %H:%M} UTC" in tls.message and "CN 127.0.0.1, issuer monitor test CA" in tls.message
    assert tls.details["subject_cn"] == "127.0.0.1" and tls.details["issuer_cn"] == "monitor test CA"
    assert tls.details["names"] == ["localhost", "127.0.0.1"] and tls.details["used_by"] == ["scraper:api"]


def test_a_certificate_that_expired_yesterday_is_critical_with_its_date_when_not_verified(serving, certs, tmp_path):
    server = serving("yesterday")
    results = health(scrapers(("lab", https_url(server), {"verify": False})), tmp_path)
    tls = results[f"tls:127.0.0.1:{server.port}"]
    expired = certs["yesterday"][2].not_valid_after_utc
    assert results["scraper:lab"].status == OK  # verify = false: the probe itself passes
    assert tls.status == CRITICAL
    assert tls.message.startswith(f"certificate of 127.0.0.1:{server.port} expired on {expired:%Y-%m-%d %H:%M} UTC")
    assert "verify = false for scraper:lab" in tls.message and tls.details["unverified"] == ["scraper:lab"]
    assert tls.details["cert_expires_in_seconds"] < 0


def test_a_certificate_that_expired_yesterday_is_refused_and_still_critical_with_its_date(serving, certs, ca,
                                                                                         tmp_path):
    server = serving("yesterday")
    results = health(scrapers(("api", https_url(server), {"ca_cert": str(ca.path)})), tmp_path)
    tls = results[f"tls:127.0.0.1:{server.port}"]
    expired = certs["yesterday"][2].not_valid_after_utc
    # The probe's own verdict is the refusal, not the extra handshake that read the dates.
    assert results["scraper:api"].status == CRITICAL and "certificate has expired" in results["scraper:api"].message
    assert tls.status == CRITICAL
    assert tls.message.startswith(f"certificate of 127.0.0.1:{server.port} expired on {expired:%Y-%m-%d %H:%M} UTC "
                                  "(1d")
    assert tls.message.endswith("issuer monitor test CA); refused: certificate verify failed: certificate has expired")
    left = (expired - dt.datetime.now(dt.timezone.utc)).total_seconds()
    assert abs(tls.details["cert_expires_in_seconds"] - left) < 600 and tls.details["not_after"] == expired.isoformat()
    # Exported: the expiry rule fires for it, as for any certificate past its date.
    [(name, _, _, labels, value)] = checks.exported(tls)
    assert (name, labels, value) == ("monitor_tls_cert_expiry_seconds", {"target": f"127.0.0.1:{server.port}"},
                                     tls.details["cert_expires_in_seconds"])


def test_a_certificate_not_yet_valid_is_critical_with_the_date_it_starts(serving, certs, tmp_path):
    server = serving("not_yet")
    results = health(scrapers(("lab", https_url(server), {"verify": False})), tmp_path)
    tls = results[f"tls:127.0.0.1:{server.port}"]
    starts = certs["not_yet"][2].not_valid_before_utc
    assert tls.status == CRITICAL
    assert f"is not valid until {starts:%Y-%m-%d %H:%M} UTC" in tls.message


def test_a_certificate_not_yet_valid_refused_by_the_verification_says_when_it_starts(serving, certs, ca, tmp_path):
    server = serving("not_yet")
    results = health(scrapers(("api", https_url(server), {"ca_cert": str(ca.path)})), tmp_path)
    tls = results[f"tls:127.0.0.1:{server.port}"]
    starts = certs["not_yet"][2].not_valid_before_utc
    assert tls.status == CRITICAL and "certificate is not yet valid" in results["scraper:api"].message
    assert tls.message.startswith(f"certificate of 127.0.0.1:{server.port} is not valid until "
                                  f"{starts:%Y-%m-%d %H:%M} UTC (in 23h")
    assert tls.message.endswith("; refused: certificate verify failed: certificate is not yet valid")
    assert tls.details["cert_expires_in_seconds"] > 29 * 86400  # exported, far from the expiry rule's levels


def test_an_untrusted_certificate_is_critical_naming_the_verification_failure_and_its_dates(serving, certs,
                                                                                           tmp_path):
    server = serving("twenty_days")  # the test CA is not in certifi's bundle
    results = health(scrapers(("api", https_url(server), {})), tmp_path)
    tls = results[f"tls:127.0.0.1:{server.port}"]
    not_after = certs["twenty_days"][2].not_valid_after_utc
    assert tls.status == CRITICAL
    assert tls.message.startswith(f"certificate of 127.0.0.1:{server.port} refused: certificate verify failed: "
                                  "unable to get local issuer certificate (it expires in 19d23h, on "
                                  f"{not_after:%Y-%m-%d %H:%M} UTC; CN 127.0.0.1, issuer monitor test CA)")
    assert 19 * 86400 < tls.details["cert_expires_in_seconds"] <= 20 * 86400


def test_an_expired_intermediate_is_told_apart_from_the_leaf(ca, tmp_path):
    middle = Authority(tmp_path / "mid", "monitor test intermediate", parent=ca, not_before=NOW - 30 * DAY,
                       not_after=NOW - DAY)
    cert, key, _ = middle.leaf("behind-expired", NOW - 2 * DAY, NOW + 20 * DAY)
    with https_server(cert, key) as server:
        server.route("/health", reply(json=HEALTH))
        results = health(scrapers(("api", https_url(server), {"ca_cert": str(ca.path)})), tmp_path)
    tls = results[f"tls:127.0.0.1:{server.port}"]
    assert tls.status == CRITICAL
    assert tls.message.startswith(f"certificate of 127.0.0.1:{server.port} refused (a certificate of its chain has "
                                  "expired): certificate verify failed: certificate has expired (it expires in 19d23h")
    assert "issuer monitor test intermediate" in tls.message


def test_the_extra_handshake_keeps_within_the_probe_s_timeout_and_its_verdict(certs, tmp_path):
    """A server that shows its certificate once, then accepts connections and says nothing:
    the read of the refused certificate gives up before the probe's deadline, and the probe
    still says why it was refused, not "timed out"."""
    cert, key, _ = certs["twenty_days"]
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    held = []

    def serve():
        first = True
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            if first:
                first = False
                try:
                    context.wrap_socket(conn, server_side=True).close()  # the client refuses it
                except OSError:
                    conn.close()
            else:
                held.append(conn)  # never a byte back

    threading.Thread(target=serve, daemon=True).start()
    port = listener.getsockname()[1]
    try:
        started = time.monotonic()
        results = health(scrapers(("api", f"https://127.0.0.1:{port}/health", {"timeout": "1s"})), tmp_path)
        took = time.monotonic() - started
    finally:
        listener.close()
        for conn in held:
            conn.close()
    assert "unable to get local issuer certificate" in results["scraper:api"].message
    tls = results[f"tls:127.0.0.1:{port}"]
    assert tls.status == CRITICAL and tls.message.endswith("unable to get local issuer certificate; its dates "
                                                           "could not be read")
    assert len(held) == 1 and took < 5  # one extra connection; the probe's 1 s, generously


class _RefusedThenHeld:
    """A TLS server on loopback showing `cert`: to its first connection (the probe refuses it)
    and to any but those numbered in `hold` (default: every later one), which it holds
    without a byte back; `on_held(conn)` runs as one comes."""

    def __init__(self, cert, key, on_held=lambda conn: None, hold=None):
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port, self.held, self.on_held, self.hold = self.listener.getsockname()[1], [], on_held, hold
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        number = 0
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            number += 1
            if number > 1 and (self.hold is None or number in self.hold):
                self.held.append(conn)
                self.on_held(conn)
                continue
            try:
                self.context.wrap_socket(conn, server_side=True).close()
            except OSError:
                conn.close()

    def close(self):
        self.listener.close()
        for conn in self.held:
            conn.close()


def _tls_verdict(port, seen):
    target = tls_check.Target("127.0.0.1", port, f"127.0.0.1:{port}", ("scraper:api",), tls_check.DEFAULT_EXPIRY, ())
    return tls_check.expiry(target, seen)


def test_a_loop_lagging_past_the_deadline_during_the_extra_handshake_keeps_the_refusal(certs):
    """The loop stalls (its clock jumps past the probe's deadline) while the refused
    certificate is being read: the probe still says why it was refused, not "timed out",
    and the tls check is critical, not unknown."""
    session = http.new_session(limit=4, certificates=PeerCertificates())
    real_time, jump = session.loop.time, [0.0]
    session.loop.time = lambda: real_time() + jump[0]  # the loop's clock: its timers read it

    def stall(conn):  # the extra handshake has begun: the loop wakes up a minute later
        jump[0] = 60.0
        session.loop.call_soon_threadsafe(lambda: None)

    server = _RefusedThenHeld(*certs["twenty_days"][:2], on_held=stall)
    try:
        with session, pytest.raises(http.ProbeError) as probe:
            http.get(session, f"https://127.0.0.1:{server.port}/health", 5.0)
    finally:
        server.close()
    assert "unable to get local issuer certificate" in probe.value.reason and not probe.value.timed_out
    assert len(server.held) == 1  # the extra handshake was tried, and stalled
    result = _tls_verdict(server.port, session.certificates)
    assert result.status == CRITICAL and result.message.endswith(
        "refused: certificate verify failed: unable to get local issuer certificate; its dates could not be read")


def test_a_refused_certificate_is_kept_when_the_extra_handshake_cannot_open_a_socket(certs, monkeypatch):
    """Out of file descriptors (EMFILE) for the extra handshake: the refusal and the probe's
    reason stand."""
    import errno
    import types

    from monitor import http_loop

    opened = []

    def new_socket(*args, **kwargs):
        if opened:
            raise OSError(errno.EMFILE, "Too many open files")
        opened.append(socket.socket(*args, **kwargs))
        return opened[-1]

    names = {name: getattr(socket, name) for name in dir(socket) if not name.startswith("_")}
    monkeypatch.setattr(http_loop, "socket", types.SimpleNamespace(**{**names, "socket": new_socket}))
    server = _RefusedThenHeld(*certs["twenty_days"][:2])
    try:
        with http.new_session(limit=4, certificates=PeerCertificates()) as session, \
                pytest.raises(http.ProbeError) as probe:
            http.get(session, f"https://127.0.0.1:{server.port}/health", 5.0)
    finally:
        server.close()
    assert "unable to get local issuer certificate" in probe.value.reason and server.held == []
    result = _tls_verdict(server.port, session.certificates)
    assert result.status == CRITICAL and result.message.endswith("its dates could not be read")


def test_a_probe_cancelled_while_reading_a_refused_certificate_leaves_the_read_to_the_next(certs):
    """The first probe is cancelled during the extra handshake: its refusal is recorded, and
    the next probe refused by that target reads the certificate's dates."""
    assigned, probes = threading.Event(), []

    def cancel(conn):
        assigned.wait(5)
        probes[0].cancel()

    server = _RefusedThenHeld(*certs["twenty_days"][:2], on_held=cancel, hold={2})
    url = f"https://127.0.0.1:{server.port}/health"
    try:
        with http.new_session(limit=4, certificates=PeerCertificates()) as session:
            probes.append(http.start(session, url, 5.0))
            assigned.set()
            with pytest.raises(concurrent.futures.CancelledError):
                probes[0].result(5)
            assert session.certificates.get("127.0.0.1", server.port).der is None  # the refusal alone
            with pytest.raises(http.ProbeError) as probe:
                http.get(session, url, 5.0)
    finally:
        server.close()
    assert "unable to get local issuer certificate" in probe.value.reason and len(server.held) == 1
    result = _tls_verdict(server.port, session.certificates)
    assert result.status == CRITICAL and "unable to get local issuer certificate (it expires in 19d" in result.message


@pytest.mark.parametrize("der", [b"\x30\x03\x30\x01\x00", "truncated"])
def test_a_refused_certificate_whose_dates_cannot_be_read_is_still_critical(certs, der):
    """The extra handshake read a leaf the DER walk cannot parse: the refusal still decides."""
    der = _der(certs["yesterday"][2])[:-40] if der == "truncated" else der
    seen = PeerCertificates()
    seen.failed("127.0.0.1", 443, "certificate verify failed: self-signed certificate", True, 18, der)
    result = _tls_verdict(443, seen)
    assert result.status == CRITICAL
    assert result.message.startswith("certificate of 127.0.0.1:443 refused: certificate verify failed: "
                                     "self-signed certificate; its dates could not be read (")
    assert "cert_expires_in_seconds" not in result.details  # no sample: TlsCertificateInvalid covers it


def test_a_refusal_with_its_certificate_wins_over_another_entry_s_unverified_handshake(certs):
    der = _der(certs["yesterday"][2])
    for order in ("refused first", "seen first"):
        seen = PeerCertificates()
        steps = [lambda: seen.failed("Api.example", 443, "certificate verify failed: certificate has expired", True,
                                     10, der),
                 lambda: seen.saw("api.example", 443, der)]
        for step in steps if order == "refused first" else steps[::-1]:
            step()
        assert seen.get("api.example", 443) == (der, "certificate verify failed: certificate has expired", True, 10)


def test_a_refusal_whose_certificate_was_not_read_keeps_what_another_entry_s_handshake_showed(certs):
    der, reason = _der(certs["yesterday"][2]), "certificate verify failed: certificate has expired"
    for order in ("refused first", "seen first"):
        seen = PeerCertificates()
        steps = [lambda: seen.failed("api.example", 443, reason, True, 10), lambda: seen.saw("api.example", 443, der)]
        for step in steps if order == "refused first" else steps[::-1]:
            step()
        assert seen.get("api.example", 443) == (der, reason, True, 10), order
        target = tls_check.Target("api.example", 443, "api.example:443", ("scraper:api", "scraper:lab"),
                                  tls_check.DEFAULT_EXPIRY, ("scraper:lab",))
        result = tls_check.expiry(target, seen)
        assert result.status == CRITICAL and "expired on" in result.message and result.message.endswith(
            f"; refused: {reason}"), order


def test_two_scrapers_and_a_quota_on_one_server_give_one_check_judged_by_the_strictest(serving, ca, tmp_path):
    server = serving("twenty_days")
    strict = {"warning": "30d", "critical": "25d"}  # 20 days left: critical for this scraper alone
    raw = scrapers(("a", https_url(server), {"ca_cert": str(ca.path)}),
                   ("b", https_url(server, "/health?x=1"), {"ca_cert": str(ca.path), "tls_expiry": strict}))
    raw["quotas"] = [{"name": "q", "url": https_url(server, "/quota"), "remaining_header": "X-R", "limit": 100,
                      "ca_cert": str(ca.path)}]
    results = health(raw, tmp_path)
    [tls] = tls_results(results)
    assert tls.id == f"tls:127.0.0.1:{server.port}"
    assert tls.details["used_by"] == ["scraper:a", "scraper:b", "quota:q"]
    assert tls.status == CRITICAL and tls.warning == 30 * 86400 and tls.critical == 25 * 86400
    assert results["quota:q"].status == OK


def test_a_connection_refused_before_tls_is_unknown_and_plain_http_has_no_check(server, tmp_path):
    port = closed_port()
    results = health(scrapers(("down", f"https://127.0.0.1:{port}/health", {}),
                              ("plain", server.route("/health", reply(json=HEALTH)), {})), tmp_path)
    [tls] = tls_results(results)
    assert results["scraper:down"].status == CRITICAL
    assert tls.id == f"tls:127.0.0.1:{port}" and tls.status == UNKNOWN
    assert tls.message.startswith(f"certificate of 127.0.0.1:{port} not seen: the connection failed before TLS")


def test_only_the_targets_of_the_probes_this_run_makes_are_checked(serving, ca, tmp_path):
    server = serving("two_days")
    raw = scrapers(("api", https_url(server), {"ca_cert": str(ca.path)}))
    assert tls_results(health(raw, tmp_path, only=("scraper",))) == []  # `--only scraper`
    assert tls_results(health(raw, tmp_path, only=("tls",))) == []      # no probe ran: nothing seen
    config = monitor_config.build(raw, None, str(tmp_path))
    assert f"tls:127.0.0.1:{server.port}" in checks.known_check_ids(config, {})  # for `silence add`


def test_the_alert_headline_and_the_textfile_sample(serving, ca, tmp_path):
    server = serving("two_days")
    [tls] = tls_results(health(scrapers(("api", https_url(server), {"ca_cert": str(ca.path)})), tmp_path))
    assert messages.headline(tls, CRITICAL).startswith("expiry 1d23h") and messages.headline(tls, CRITICAL).endswith(
        "< 3d")
    [(name, _, labels, sample_labels, value)] = checks.exported(tls)
    assert name == "monitor_tls_cert_expiry_seconds" and labels == ("target",)
    assert sample_labels == {"target": f"127.0.0.1:{server.port}"} and value == tls.details["cert_expires_in_seconds"]


def test_a_hostile_common_name_is_printable_and_clipped(ca, tmp_path):
    cert, key, _ = ca.leaf("hostile", NOW - DAY, NOW + 20 * DAY, cn="evil\x1b[31m\u202e",
                           dns=("a" * 300 + ".example",) * 30)
    with https_server(cert, key) as server:
        server.route("/health", reply(json=HEALTH))
        [tls] = tls_results(health(scrapers(("api", https_url(server), {"verify": False})), tmp_path))
    assert "\x1b" not in tls.message and "\u202e" not in tls.message and "evil\\x1b[31m\\u202e" in tls.message
    assert all(len(name) <= 100 for name in tls.details["names"]) and len(tls.details["names"]) == 20
    assert tls.details["names_total"] == 31  # and the IP address


# --- Vault: the hvac/requests client records the certificate it was shown ------------------

VAULT_HEALTH = {"initialized": True, "sealed": False, "standby": False, "version": "2.1.0"}


def test_a_vault_address_over_https_gets_its_tls_check(serving, ca, tmp_path):
    server = serving("two_days")
    server.route("/v1/sys/health", reply(json=VAULT_HEALTH))
    raw = {"vault": {"url": f"https://127.0.0.1:{server.port}", "ca_cert": str(ca.path), "token_env": "NO_SUCH_VAR"}}
    results = health(raw, tmp_path)
    tls = results[f"tls:127.0.0.1:{server.port}"]
    assert results["vault"].status == OK
    assert tls.status == CRITICAL and tls.details["used_by"] == ["vault"] and "expires in 1d23h" in tls.message


def test_a_vault_with_an_expired_certificate_and_verify_false_still_reports_the_date(serving, certs, tmp_path):
    server = serving("yesterday")
    server.route("/v1/sys/health", reply(json=VAULT_HEALTH))
    raw = {"vault": {"url": f"https://127.0.0.1:{server.port}", "verify": False, "token_env": "NO_SUCH_VAR"}}
    tls = health(raw, tmp_path)[f"tls:127.0.0.1:{server.port}"]
    expired = certs["yesterday"][2].not_valid_after_utc
    assert tls.status == CRITICAL and f"expired on {expired:%Y-%m-%d %H:%M} UTC" in tls.message


def test_a_vault_refusing_an_expired_certificate_says_why_and_when(serving, certs, ca, tmp_path):
    server = serving("yesterday")
    raw = {"vault": {"url": f"https://127.0.0.1:{server.port}", "ca_cert": str(ca.path), "token_env": "NO_SUCH_VAR"}}
    results = health(raw, tmp_path)
    tls = results[f"tls:127.0.0.1:{server.port}"]
    expired = certs["yesterday"][2].not_valid_after_utc
    assert results["vault"].status == CRITICAL and "certificate has expired" in results["vault"].message
    assert tls.status == CRITICAL and f"expired on {expired:%Y-%m-%d %H:%M} UTC (1d" in tls.message
    assert tls.message.endswith("; refused: certificate verify failed: certificate has expired")
    assert tls.details["cert_expires_in_seconds"] < -86000


def test_a_vault_behind_a_proxy_reads_the_refused_certificate_through_it(serving, certs, ca, tmp_path, monkeypatch,
                                                                        proxy):
    server = serving("yesterday")
    relay = proxy()
    _proxied(monkeypatch, https_proxy=relay.url())
    raw = {"vault": {"url": f"https://127.0.0.1:{server.port}", "ca_cert": str(ca.path), "token_env": "NO_SUCH_VAR"}}
    tls = health(raw, tmp_path)[f"tls:127.0.0.1:{server.port}"]
    # urllib3's tunnel, then the one that read the certificate
    assert [seen[0].split()[:2] for seen in relay.seen] == [["CONNECT", f"127.0.0.1:{server.port}"]] * 2
    assert tls.status == CRITICAL and tls.details["cert_expires_in_seconds"] < -86000


def test_reading_a_refused_certificate_gives_up_within_its_time():
    listener = socket.create_server(("127.0.0.1", 0), backlog=4)  # never accepted: no handshake ever
    try:
        started = time.monotonic()
        assert unverified_leaf("127.0.0.1", listener.getsockname()[1], 0.3) is None
        assert time.monotonic() - started < 1.5  # 0.3 s, generously
        assert unverified_leaf("127.0.0.1", closed_port(), 5) is None  # refused: at once
    finally:
        listener.close()


def test_the_real_openbao_dev_tls_certificate_is_read(tls_bao, tmp_path):
    raw = {"vault": {"url": tls_bao.addr, "ca_cert": tls_bao.ca_cert, "token_env": "NO_SUCH_VAR"}}
    results = health(raw, tmp_path)
    [tls] = tls_results(results)
    assert results["vault"].status == OK and tls.status in (OK, WARNING, CRITICAL)
    assert tls.id == "tls:" + tls_bao.addr.split("//", 1)[1]
    assert "cert_expires_in_seconds" in tls.details and tls.details["used_by"] == ["vault"]


@pytest.fixture(scope="module")
def tls_bao():
    from tests.openbao import dev_server

    with dev_server("tls-root", tls=True) as server:
        yield server


# --- the DER walk agrees with cryptography -----------------------------------------------

def _der(cert) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


@pytest.mark.parametrize("kind", ["usual", "generalized_time", "no_cn", "ipv6_and_idn"])
def test_the_der_walk_reads_what_cryptography_reads(ca, kind):
    start, end, cn, dns, ips = NOW - DAY, NOW + 20 * DAY, "api.example.org", ("api.example.org",), ()
    if kind == "generalized_time":  # after 2049: GeneralizedTime, not UTCTime
        end = dt.datetime(2051, 3, 1, 12, 30, 5, tzinfo=dt.timezone.utc)
    elif kind == "no_cn":
        cn = None
    elif kind == "ipv6_and_idn":
        cn, dns, ips = "bücher.example", ("xn--bcher-kva.example",), ("::1", "10.0.0.1")
    _, _, cert = ca.leaf(f"der-{kind}", start, end, cn=cn, dns=dns, ips=ips)
    read = read_der(_der(cert))
    assert read.not_before == cert.not_valid_before_utc and read.not_after == cert.not_valid_after_utc
    assert read.subject_cn == cn and read.issuer_cn == "monitor test CA"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert read.names == [*san.get_values_for_type(x509.DNSName),
                          *map(str, san.get_values_for_type(x509.IPAddress))]


def test_a_malformed_certificate_raises_value_error_only(ca):
    _, _, cert = ca.leaf("der-cut", NOW - DAY, NOW + DAY)
    der = _der(cert)
    for cut in range(len(der)):
        with pytest.raises(ValueError):
            read_der(der[:cut])
    for at in range(0, len(der), 7):  # a flipped byte: read or refused, never another exception
        try:
            read_der(der[:at] + bytes([der[at] ^ 0xFF]) + der[at + 1:])
        except ValueError:
            pass


# --- the cold path -------------------------------------------------------------------------

def test_a_run_without_https_targets_loads_no_tls_code(tmp_path):
    code = ("import json, sys\n"
            "from monitor.cli import main\n"
            "try:\n"
            "    main(['health', '--format', 'json', '--quiet'])\n"
            "except SystemExit:\n"
            "    pass\n"
            "print(json.dumps([m for m in ('monitor.checks.tls', 'monitor.peer_certs', 'ssl') if m in sys.modules]))\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=clean_env(), capture_output=True,
                          text=True, timeout=30)
    assert json.loads(proc.stdout.splitlines()[-1]) == []


# --- what an operator sees: the JSON, the textfile, the Nagios line ---------------------------

def test_monitor_health_reports_the_certificate_in_json_textfile_and_nagios(serving, ca, tmp_path, run_monitor,
                                                                          envelope):
    server = serving("ten_days")
    config = f"""
[[scrapers]]
name = "api"
url = "{https_url(server)}"
ca_cert = "{ca.path}"
[[scrapers]]
name = "api2"
url = "{https_url(server, '/health?again=1')}"
verify = false
"""
    target = f"127.0.0.1:{server.port}"
    (tmp_path / "prom").mkdir()
    proc = run_monitor(["health", "--format", "json", "--textfile-dir", str(tmp_path / "prom"), "--no-notify"],
                       tmp_path, config=config)
    tls = envelope(proc)["checks"][f"tls:{target}"]
    assert tls["kind"] == "tls" and tls["status"] == WARNING and tls["unit"] == "s"
    assert tls["details"]["used_by"] == ["scraper:api", "scraper:api2"]
    text = (tmp_path / "prom" / "monitor_health.prom").read_text()
    line = next(line for line in text.splitlines() if line.startswith("monitor_tls_cert_expiry_seconds{"))
    assert line.startswith(f'monitor_tls_cert_expiry_seconds{{target="{target}"}} ')
    assert 9 * 86400 < float(line.split()[-1]) <= 10 * 86400
    nagios = run_monitor(["health", "--format", "nagios", "--no-notify"], tmp_path, config=config)
    assert f"WARNING tls:{target}: certificate of {target} expires in 9d23h" in nagios.stdout


def test_a_bad_tls_expiry_or_verify_is_a_config_error_naming_the_key(tmp_path):
    with pytest.raises(monitor_config.ConfigError) as bad:
        monitor_config.build({"scrapers": [{"name": "a", "url": "https://x.example/", "verify": "no",
                                            "tls_expiry": {"warning": "1d", "critical": "3d"}}]}, None, str(tmp_path))
    assert "scrapers[0].verify: expected true or false" in str(bad.value)
    assert 'scrapers[0].tls_expiry: warning ("1d") is below critical ("3d")' in str(bad.value)
