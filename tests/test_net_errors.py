"""One wording per network failure (monitor/net_errors.py), whichever client met it.

The exceptions are built as requests and urllib3 raise them (wrapped two or three
deep, URLs with secrets in their text); the reasons come from their types only. Then
the same failure goes through the probes, Vault and Telegram and reads the same.
"""

import errno
import http.client
import socket
import ssl

import pytest
import requests
import responses
import urllib3.exceptions as u3

from monitor import http as probes
from monitor.alerts.telegram import TelegramClient
from monitor.net_errors import describe, is_timeout
from monitor.vault_secrets import describe_failure

SECRET = "s3cretQUERYvalue"
PATH = f"/health?apikey={SECRET}"


def wrapped(cause, outer=requests.ConnectionError):
    """`cause` as requests hands it over: outer(MaxRetryError(reason=cause))."""
    return outer(u3.MaxRetryError(None, PATH, cause))


def untrusted():
    cert = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")
    cert.verify_message, cert.reason = "self-signed certificate", "CERTIFICATE_VERIFY_FAILED"
    return wrapped(u3.SSLError(cert), requests.exceptions.SSLError)


def tls(reason):
    error = ssl.SSLError(1, f"[SSL: {reason}] {reason.lower()}")
    error.reason = reason
    return wrapped(u3.SSLError(error), requests.exceptions.SSLError)


def new_connection(os_error):
    error = u3.NewConnectionError(None, f"Failed to establish a new connection: {os_error}")
    error.__cause__ = os_error
    return wrapped(error)


FAILURES = {
    "connect timeout": (wrapped(u3.ConnectTimeoutError(None, PATH), requests.ConnectTimeout),
                        "connection timed out after 5s"),
    "read timeout": (requests.ReadTimeout(u3.ReadTimeoutError(None, PATH, "Read timed out.")), "timed out after 5s"),
    "refused": (new_connection(ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")), "connection refused"),
    "DNS": (wrapped(u3.NameResolutionError("scraper.internal", None, socket.gaierror(-2, "Name or service not known"))),
            "DNS lookup failed for host scraper.internal"),
    "untrusted certificate": (untrusted(), "TLS certificate not trusted: self-signed certificate"),
    "plain http": (tls("WRONG_VERSION_NUMBER"),
                   "TLS handshake failed (wrong version number): is the server plain http://?"),
    "other TLS": (tls("TLSV1_ALERT_INTERNAL_ERROR"), "TLS error: tlsv1 alert internal error"),
    "closed": (requests.ConnectionError(u3.ProtocolError("Connection aborted.", http.client.RemoteDisconnected(
        "Remote end closed connection without response"))), "the server closed the connection without answering"),
    "reset": (requests.ConnectionError(u3.ProtocolError("Connection aborted.", ConnectionResetError(
        errno.ECONNRESET, "Connection reset by peer"))), "connection reset by the server"),
    "network unreachable": (new_connection(OSError(errno.ENETUNREACH, "Network is unreachable")),
                            "network unreachable"),
    "host unreachable": (new_connection(OSError(errno.EHOSTUNREACH, "No route to host")), "host unreachable"),
    "redirects": (requests.TooManyRedirects("Exceeded 3 redirects."), "too many redirects (more than 3)"),
    "proxy": (wrapped(u3.ProxyError("Unable to connect to proxy", OSError("x")), requests.exceptions.ProxyError),
              "proxy error (check https_proxy/no_proxy)"),
    "broken body": (requests.exceptions.ChunkedEncodingError(u3.ProtocolError("Connection broken: IncompleteRead")),
                    "connection broken while reading the answer"),
    "other connection": (new_connection(OSError(errno.EPERM, "Operation not permitted")),
                         "connection failed: Operation not permitted"),
}


@pytest.mark.parametrize("name", FAILURES)
def test_each_failure_has_one_short_wording_built_from_types_only(name):
    exc, wording = FAILURES[name]
    reason = describe(exc, host="scraper.internal", timeout=5.0, max_redirects=3)
    assert reason == wording
    assert SECRET not in reason and "MaxRetryError" not in reason and "Caused by" not in reason


def test_without_a_host_or_a_timeout_the_wording_just_leaves_them_out():
    assert describe(FAILURES["DNS"][0]) == "DNS lookup failed"
    assert describe(FAILURES["read timeout"][0]) == "timed out"
    assert describe(FAILURES["connect timeout"][0]) == "connection timed out"


def test_refused_is_not_a_timeout_though_urllib3_files_it_under_connect_timeouts():
    refused = FAILURES["refused"][0]
    assert not is_timeout(refused) and describe(refused, timeout=5.0) == "connection refused"
    assert is_timeout(FAILURES["read timeout"][0]) and is_timeout(socket.timeout("timed out"))


def test_an_untrusted_certificate_names_the_setting_that_fixes_it_when_there_is_one():
    assert describe(untrusted(), ca_option="vault.ca_cert") == \
        "TLS certificate not trusted: self-signed certificate (set vault.ca_cert?)"


# --- the same failure through each client --------------------------------------------------------

DNS_FAILURE = FAILURES["DNS"][0]


def test_a_probe_vault_and_telegram_word_the_same_dns_failure_the_same_way(monkeypatch):
    from monitor import http_loop

    async def connect(self, scheme, host, port, *tls_settings):  # the probes' own client: what its resolver raises
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(http_loop.Prober, "_connect", connect)
    with pytest.raises(probes.ProbeError) as probe:
        probes.get(None, f"http://scraper.internal{PATH}", 1.0)
    with responses.RequestsMock() as mock:
        mock.post("https://scraper.internal/botTOKEN123/sendMessage", body=DNS_FAILURE)
        client = TelegramClient("TOKEN123", "https://scraper.internal", 5.0, sleep=lambda s: None, retries=0)
        delivery = client.send("-100123", "hello")
    vault = describe_failure(DNS_FAILURE, "http://scraper.internal:8200", 5.0)
    wording = "DNS lookup failed for host scraper.internal"
    assert probe.value.reason == vault == wording
    assert delivery.error == f"Telegram unreachable: {wording}"


def test_telegram_no_longer_quotes_the_exception_text():
    with responses.RequestsMock() as mock:
        mock.post("https://api.telegram.test/botTOKEN123/sendMessage", body=requests.ConnectionError(
            f"HTTPSConnectionPool(host='api.telegram.test', port=443): Max retries exceeded with url: "
            f"/botTOKEN123/sendMessage?x={SECRET}"))
        delivery = TelegramClient("TOKEN123", "https://api.telegram.test", 5.0, sleep=lambda s: None,
                                  retries=0).send("-100123", "hello")
    assert delivery.error == "Telegram unreachable: connection failed"
