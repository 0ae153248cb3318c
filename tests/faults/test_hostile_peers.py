"""Hostile peers: every conversation ends within its timeout with a clear verdict.

A scraper endpoint that never stops sending, one that trickles a byte a second, a
redirect loop, a "Vault" that answers a web page, a "Telegram" that answers 200 with
a body that is not JSON. Each is met by the real code path (in process, timed), then
all at once by one `monitor health` run (SPEC: Failure behaviour, "A run always ends,
within its deadline").
"""


import pytest

from monitor import http
from monitor.checks import scrapers, vault
from monitor.results import CRITICAL, Threshold
from monitor.alerts.telegram import TelegramClient
from monitor.units import Duration
from tests import loopback
from tests.conftest import monitor_json
from tests.faults.conftest import CHAT, HOST_CHECKS, no_traceback
from tests.telegram_standin import invalid_json

TIMEOUT = 2.0
MARGIN = 1.0  # thread start-up, a loaded 2-core machine; the runner's own margin is 0.5 s
HTML = "<!doctype html><html><body><h1>Welcome to nginx!</h1></body></html>"


@pytest.fixture
def web():
    with loopback.serve() as server:
        server.route("/endless", loopback.endless())
        server.route("/trickle", loopback.trickle(length=100, interval=1.0))
        server.route("/loop", loopback.redirect("/loop"))
        for path in ("/v1/sys/health", "/v1/auth/token/lookup-self"):
            server.route(path, loopback.reply(200, HTML, headers={"Content-Type": "text/html"}))
        yield server


def _scraper(url, **extra):
    cfg = {"name": "hostile", "url": url, "timeout": Duration(TIMEOUT), "latency_ms": Threshold(100000, 100000)}
    return {**cfg, **extra}


def _timed(func, *args):
    result, seconds = loopback.elapsed(func, *args)
    assert seconds < TIMEOUT + MARGIN, f"took {seconds:.2f}s"
    return result


def test_an_endless_body_is_read_no_further_than_the_bound_and_judged_critical(web):
    result = _timed(scrapers.scraper, _scraper(web.url("/endless"), expect_json={"status": "ok"}), http.new_session())
    assert result.status == CRITICAL
    assert "body is over 1,000,000 bytes, not parsed" in result.message
    assert result.details["http"]["truncated"] is True and result.details["http"]["body_bytes"] == http.MAX_BYTES


def test_a_body_trickling_a_byte_a_second_times_out_at_the_deadline(web):
    result = _timed(scrapers.scraper, _scraper(web.url("/trickle")), http.new_session())
    assert result.status == CRITICAL
    assert result.message == "HTTP: timed out after 2s"


def test_a_redirect_loop_stops_after_ten_hops(web):
    result = _timed(scrapers.scraper, _scraper(web.url("/loop")), http.new_session())
    assert result.status == CRITICAL
    assert result.message == "HTTP: too many redirects (more than 10)"
    assert sum(path == "/loop" for path, _ in web.received) == http.MAX_REDIRECTS + 1


def test_a_vault_that_answers_a_web_page_is_critical_and_says_so(web):
    cfg = {"url": web.url(""), "timeout": Duration(TIMEOUT)}
    health = _timed(lambda: vault.health(cfg, environ={}))
    assert health.status == CRITICAL
    assert "HTTP 200 with a non-JSON answer" in health.message and "a proxy or another service there?" in health.message
    token = _timed(lambda: vault.token(cfg, "SECRETvaultTOKENsecretVAULT", environ={}))
    assert token.status == "unknown" and token.message == "cannot look up the token: unexpected answer (HTTP 200)"


def test_a_telegram_answering_200_with_invalid_json_ends_at_once_without_retrying():
    from tests.telegram_standin import TelegramStandIn

    with TelegramStandIn() as standin:
        standin.always(invalid_json())
        client = TelegramClient("987654321:AAsecretSECRETsecretSECRETsecret42", standin.api_url, timeout=TIMEOUT)
        delivery = _timed(client.send, CHAT, "<b>disk:/</b> critical")
        # Not Telegram's {"ok": true}: a proxy or a wrong api_url must not swallow the
        # alert, so it is kept (a duplicate beats silence), not retried in a loop.
        assert not delivery.ok and delivery.config_error and len(standin.received) == 1


def test_one_run_facing_every_hostile_peer_at_once_ends_in_time_with_a_verdict_for_each(install, telegram, web):
    install.extra = (
        f'[vault]\nurl = "{web.url("")}"\ntimeout = "2s"\n'
        + "".join(f'[[scrapers]]\nname = "{name}"\nurl = "{web.url("/" + name)}"\ntimeout = "2s"\n'
                  'latency_ms = { warning = 100000, critical = 100000 }\n'
                  + ('expect_json = { status = "ok" }\n' if name == "endless" else "")
                  for name in ("endless", "trickle", "loop")))
    telegram.always(invalid_json())
    run = install.health(env={"VAULT_TOKEN": "SECRETvaultTOKENsecretVAULT"})

    assert run.seconds < TIMEOUT + 0.5 + 2.5, f"the run took {run.seconds:.1f}s"  # + start-up of the process
    assert run.code == 2 and no_traceback(run), run
    checks = run.data["checks"]
    assert set(checks) == HOST_CHECKS | {"vault", "vault-token", "scraper:endless", "scraper:trickle", "scraper:loop"}
    verdicts = {cid: (c["status"], c["message"]) for cid, c in checks.items() if cid not in HOST_CHECKS}
    assert verdicts["scraper:endless"][0] == CRITICAL and "not parsed" in verdicts["scraper:endless"][1]
    assert verdicts["scraper:trickle"] == (CRITICAL, "HTTP: timed out after 2s")
    assert verdicts["scraper:loop"] == (CRITICAL, "HTTP: too many redirects (more than 10)")
    assert verdicts["vault"][0] == CRITICAL and "non-JSON answer" in verdicts["vault"][1]
    assert len(telegram.received) == 1 and run.data["notifications"]["failed"] == 1
    assert monitor_json(run.stdout)["notifications"]["outbox"] == 1  # kept for a Telegram that answers
