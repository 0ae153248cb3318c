"""The Telegram notifier and the alert text, with HTTP faked by `responses`: what Telegram
receives, how each of its answers is handled, and that the text is always valid HTML
under 4096 characters (SPEC: Alerts)."""

import json

import pytest
import requests
import responses

from monitor import redact
from monitor.alerts import messages
from monitor.alerts.state import RESOLVED, Alert
from monitor.results import CRITICAL, UNKNOWN, WARNING, Result
from monitor.alerts.telegram import LIMIT, TelegramClient, html_to_plain, split_message
from tests.telegram_standin import html_error

TOKEN = "123456789:AAFAKEtokenFAKEtokenFAKEtokenFAKE12"
API = "https://api.telegram.test"
URL = f"{API}/bot{TOKEN}/sendMessage"
T0 = 1_800_000_000.0


class Sleeps(list):
    """A `sleep` that records instead of sleeping."""

    def __call__(self, seconds):
        self.append(seconds)


@pytest.fixture
def sleeps():
    return Sleeps()


@pytest.fixture
def client(sleeps):
    return TelegramClient(TOKEN, API, 10.0, sleep=sleeps, clock=lambda: T0)


def ok_body(chat_id=-100123):
    return {"ok": True, "result": {"message_id": 7, "chat": {"id": chat_id}, "date": 1, "text": "x"}}


def error_body(code, description, **parameters):
    body = {"ok": False, "error_code": code, "description": description}
    if parameters:
        body["parameters"] = parameters
    return body


def sent_payloads():
    return [json.loads(call.request.body) for call in responses.calls]


def assert_no_token(*texts):
    for text in texts:
        assert TOKEN not in str(text) and TOKEN.split(":")[1] not in str(text)


# --- TelegramClient.send ---------------------------------------------------------------------

@responses.activate
def test_a_message_is_posted_as_html_to_the_bot_api_and_reported_delivered(client):
    responses.add(responses.POST, URL, json=ok_body())
    delivery = client.send("-100123", "<b>disk:/</b> critical", disable_notification=False)
    assert delivery.ok and delivery.chat_id == "-100123" and delivery.migrated_from is None
    (payload,) = sent_payloads()
    assert payload["chat_id"] == "-100123"
    assert payload["text"] == "<b>disk:/</b> critical"
    assert payload["parse_mode"] == "HTML"
    assert payload["disable_notification"] is False


@responses.activate
def test_a_resolved_message_is_sent_without_ringing(client):
    responses.add(responses.POST, URL, json=ok_body())
    assert client.send("-100123", "✅ RESOLVED", disable_notification=True).ok
    assert sent_payloads()[0]["disable_notification"] is True


@responses.activate
def test_a_short_rate_limit_is_waited_for_and_the_message_delivered_in_the_same_call(client, sleeps):
    responses.add(responses.POST, URL, status=429, json=error_body(429, "Too Many Requests: retry after 1",
                                                                   retry_after=1))
    responses.add(responses.POST, URL, json=ok_body())
    assert client.send("-100123", "hello").ok
    assert sleeps == [1]
    assert len(responses.calls) == 2


@responses.activate
def test_a_long_rate_limit_is_not_waited_for_but_returned_with_when_to_retry(client, sleeps):
    responses.add(responses.POST, URL, status=429, json=error_body(429, "Too Many Requests: retry after 30",
                                                                   retry_after=30))
    delivery = client.send("-100123", "hello")
    assert not delivery.ok and not delivery.config_error
    assert delivery.retry_at == T0 + 30
    assert "30" in delivery.error
    assert sleeps == [] and len(responses.calls) == 1


@responses.activate
def test_a_rate_limit_storm_waits_a_bounded_time_then_gives_up(client, sleeps):
    responses.add(responses.POST, URL, status=429, json=error_body(429, "Too Many Requests: retry after 1",
                                                                   retry_after=1))
    delivery = client.send("-100123", "hello")
    assert not delivery.ok and delivery.retry_at == T0 + 1
    assert sum(sleeps) <= 3 and len(responses.calls) <= 4


@responses.activate
def test_server_errors_are_retried_a_bounded_number_of_times_then_reported(client, sleeps):
    responses.add(responses.POST, URL, status=500, json=error_body(500, "Internal Server Error"))
    delivery = client.send("-100123", "hello")
    assert not delivery.ok and not delivery.config_error and delivery.retry_at is None
    assert "500" in delivery.error
    assert len(responses.calls) == 3
    assert sum(sleeps) <= 2


@responses.activate
def test_a_server_error_followed_by_success_is_delivered(client):
    responses.add(responses.POST, URL, status=502, body="<html>Bad Gateway</html>")
    responses.add(responses.POST, URL, json=ok_body())
    assert client.send("-100123", "hello").ok
    assert len(responses.calls) == 2


@responses.activate
def test_connection_errors_are_retried_then_reported_without_the_token(client, sleeps):
    responses.add(responses.POST, URL, body=requests.ConnectionError(
        f"HTTPSConnectionPool(host='api.telegram.test', port=443): Max retries exceeded with url: "
        f"/bot{TOKEN}/sendMessage (Caused by NewConnectionError('Connection reset by peer'))"))
    delivery = client.send("-100123", "hello")
    assert not delivery.ok and not delivery.config_error
    assert delivery.error.startswith("Telegram unreachable")
    assert len(responses.calls) == 3
    assert_no_token(delivery.error)


@responses.activate
def test_a_request_that_times_out_is_not_retried_so_the_run_stays_short(client, sleeps):
    responses.add(responses.POST, URL, body=requests.ReadTimeout("Read timed out. (read timeout=10)"))
    delivery = client.send("-100123", "hello")
    assert not delivery.ok and "timed out" in delivery.error
    assert len(responses.calls) == 1 and sleeps == []


@responses.activate
def test_a_parse_error_is_resent_once_as_plain_text(client):
    responses.add(responses.POST, URL, status=400,
                  json=error_body(400, "Bad Request: can't parse entities: Unsupported start tag \"x\""))
    responses.add(responses.POST, URL, json=ok_body())
    delivery = client.send("-100123", "<b>disk:/</b> 97% &gt; 95% &amp; rising")
    assert delivery.ok
    first, second = sent_payloads()
    assert first["parse_mode"] == "HTML"
    assert "parse_mode" not in second
    assert second["text"] == "disk:/ 97% > 95% & rising"


@responses.activate
def test_a_second_parse_error_is_not_resent_forever(client):
    responses.add(responses.POST, URL, status=400, json=error_body(400, "Bad Request: can't parse entities: x"))
    delivery = client.send("-100123", "<b>x</b>")
    assert not delivery.ok
    assert len(responses.calls) == 2


@responses.activate
def test_a_group_upgraded_to_a_supergroup_is_followed_to_its_new_id(client):
    responses.add(responses.POST, URL, status=400, json=error_body(
        400, "Bad Request: group chat was upgraded to a supergroup chat", migrate_to_chat_id=-1009876543210))
    responses.add(responses.POST, URL, json=ok_body(-1009876543210))
    delivery = client.send("-100123", "hello")
    assert delivery.ok
    assert delivery.migrated_from == "-100123" and delivery.chat_id == "-1009876543210"
    assert [p["chat_id"] for p in sent_payloads()] == ["-100123", "-1009876543210"]


@pytest.mark.parametrize("status, description, says", [
    (401, "Unauthorized", "token"),
    (404, "Not Found", "token"),
    (403, "Forbidden: bot was kicked from the supergroup chat", "-100123"),
    (400, "Bad Request: chat not found", "-100123"),
])
@responses.activate
def test_a_rejected_token_or_chat_is_a_configuration_error_not_retried(client, sleeps, status, description,
                                                                        says):
    responses.add(responses.POST, URL, status=status, json=error_body(status, description))
    delivery = client.send("-100123", "hello")
    assert not delivery.ok and delivery.config_error
    assert str(status) in delivery.error and says in delivery.error
    assert len(responses.calls) == 1 and sleeps == []
    assert_no_token(delivery.error)


@responses.activate
@pytest.mark.parametrize("body", ["<html>proxy says hi</html>", '{"status": "fine"}', '{"ok": false}'])
def test_a_200_that_is_not_telegrams_answer_is_not_counted_as_delivered(client, body):
    responses.add(responses.POST, URL, status=200, body=body)
    delivery = client.send("-100123", "hello")
    assert not delivery.ok and delivery.config_error and "api_url" in delivery.error
    assert len(responses.calls) == 1  # not retried in a loop: kept for the next run


@responses.activate
def test_an_error_description_echoing_the_token_is_masked(client):
    responses.add(responses.POST, URL, status=404,
                  json=error_body(404, f"Not Found: /bot{TOKEN}/sendMessage"))
    delivery = client.send("-100123", "hello")
    assert not delivery.ok
    assert_no_token(delivery.error)


def test_creating_a_client_registers_the_token_for_redaction():
    odd = "not-shaped-like-a-bot-token-0123456789"  # only registration can mask this one
    redact.clear()
    assert odd in redact.scrub(f"POST /bot{odd}/sendMessage")
    TelegramClient(odd, API, session=requests.Session())
    assert odd not in redact.scrub(f"POST /bot{odd}/sendMessage")
    redact.clear()


def test_the_stand_in_refuses_html_that_telegram_would_refuse():
    # The end-to-end tests rely on it to prove that messages are valid HTML.
    assert html_error("<b>disk:/</b> &lt;x&gt; &amp; <i>ok</i>") is None
    for broken in ("a < b", "a & b", "</b>", "<b>open", "<div>x</div>", "<b><i>x</b></i>", "&nbsp;"):
        assert html_error(broken) is not None, broken


def test_a_token_shaped_string_is_masked_even_if_never_registered():
    other = "987654321:BBotherTOKENotherTOKENotherTOKEN999"
    assert other not in redact.scrub(f"GET https://api.telegram.org/bot{other}/getMe")


# --- split_message / html_to_plain ----------------------------------------------------------

def test_a_short_message_is_sent_whole():
    assert split_message("<b>a</b>\nb") == ["<b>a</b>\nb"]


def test_a_long_message_is_split_on_line_breaks_under_the_limit_and_loses_nothing():
    lines = [f"• <b>check:{i}</b> — value {i}% &amp; more" for i in range(400)]
    text = "\n".join(lines)
    chunks = split_message(text)
    assert len(chunks) > 1
    assert all(len(c) <= LIMIT for c in chunks)
    assert "\n".join(chunks) == text  # cut only between lines
    assert all(html_error(c) is None for c in chunks)


def test_one_line_longer_than_the_limit_is_cut_with_tags_balanced_and_entities_whole():
    line = "<b>" + ("abc &lt;b&gt; &amp; " * 1500) + "</b> <i>tail</i>"
    chunks = split_message(line)
    assert len(chunks) >= 2
    assert all(len(c) <= LIMIT for c in chunks)
    for chunk in chunks:
        assert html_error(chunk) is None, chunk[:80]
    assert "".join(html_to_plain(c) for c in chunks) == html_to_plain(line)


def test_html_to_plain_removes_tags_and_decodes_entities():
    assert html_to_plain("<b>disk:/</b> &lt;b&gt; &amp; <i>x</i>&#x27;") == "disk:/ <b> & x'"


# --- messages.compose -----------------------------------------------------------------------

def alert(status, check_id="disk:/", message="Disk / 97% used", since=T0 - 600, **kwargs):
    r = Result(status if status != RESOLVED else "ok", message, value=97.0, unit="%", warning=90,
               critical=95, id=check_id, kind="system")
    return Alert(check_id, status, r, since, T0, **kwargs)


def test_the_message_groups_alerts_worst_first_with_host_environment_value_and_threshold():
    text = messages.compose([alert(RESOLVED, "load"), alert(WARNING, "inodes:/"), alert(CRITICAL)],
                            "vps-1", "prod", T0)
    assert html_error(text) is None
    plain = html_to_plain(text)
    critical, warning, resolved = (plain.index("🚨 CRITICAL"), plain.index("⚠️ WARNING"),
                                   plain.index("✅ RESOLVED"))
    assert critical < warning < resolved
    assert plain.index("disk:/") < warning < plain.index("inodes:/") < resolved < plain.index("load")
    assert "vps-1 (prod)" in plain
    assert "disk:/ — disk 97% > 95%" in plain and "inodes:/ — inodes 97% > 90%" in plain
    assert "ok again after 10m" in plain


def test_unknown_alerts_under_the_warning_header_as_could_not_check():
    plain = html_to_plain(messages.compose([alert(UNKNOWN, "vault", message="timed out after 5s")],
                                           "vps-1", "prod", T0))
    assert "⚠️ WARNING" in plain and "could not check: timed out after 5s" in plain


def test_reminders_and_severity_changes_say_so():
    plain = html_to_plain(messages.compose([alert(CRITICAL, reminder=True), alert(WARNING, "inodes:/",
                                                                               previous=CRITICAL)],
                                           "h", "prod", T0))
    assert "disk:/ — disk 97% > 95% (reminder)" in plain
    assert "(was critical)" in plain


@pytest.mark.parametrize("hostile", [
    "HTTP 503: <html><head><title>503</title></head><body><h1>Service Unavailable</h1></body></html>",
    "value < 5 & rising",
    "closing </b> tag and <i>open one",
    "&amp; already escaped &lt;",
])
def test_every_interpolated_value_is_escaped(hostile):
    text = messages.compose([alert(CRITICAL, f"scraper:<b>{hostile[:10]}", message=hostile)],
                            "host<1>", "prod&dev", T0)
    assert html_error(text) is None
    plain = html_to_plain(text)
    assert hostile in plain
    assert f"scraper:<b>{hostile[:10]}" in plain
    assert "host<1> (prod&dev)" in plain


def test_a_20000_character_check_message_still_fits_telegram():
    text = messages.compose([alert(CRITICAL, message="<x>&" * 5000), alert(WARNING, "inodes:/")],
                            "vps-1", "prod", T0)
    chunks = split_message(text)
    assert all(len(c) <= LIMIT for c in chunks)
    assert all(html_error(c) is None for c in chunks)
    assert "inodes:/" in html_to_plain("".join(chunks))  # the other alert is not crowded out


def test_a_20000_character_check_id_is_clipped_to_160_characters_and_fits_one_valid_message():
    text = messages.compose([alert(CRITICAL, "disk:/" + "a&<" * 7000)], "vps-1", "prod", T0)
    chunks = split_message(text)
    assert len(chunks) == 1 and len(text) < LIMIT and html_error(text) is None
    assert ("• " + ("disk:/" + "a&<" * 60)[:159] + "… — ") in html_to_plain(text)


def test_critical_and_warning_messages_ring_info_and_resolved_do_not():
    assert messages.rings([alert(CRITICAL), alert(RESOLVED, "load")])
    assert messages.rings([alert(WARNING)])
    assert not messages.rings([alert(RESOLVED)])


# --- hostile answers, from a real server on 127.0.0.1 ---------------------------------------------

@pytest.fixture
def standin():
    from tests.telegram_standin import TelegramStandIn

    with TelegramStandIn() as bot:
        yield bot


def _timed_send(client):
    import time

    started = time.monotonic()
    delivery = client.send("-100123", "hello")
    return delivery, time.monotonic() - started


@pytest.mark.parametrize("answer", ["trickling_body", "trickling_headers"])
def test_a_telegram_that_trickles_its_answer_is_cut_at_the_total_deadline(standin, answer):
    from tests import telegram_standin

    standin.always(getattr(telegram_standin, answer)(interval=0.2))  # well under the 1 s timeout
    client = TelegramClient(TOKEN, standin.api_url, timeout=1.0)
    delivery, seconds = _timed_send(client)
    assert not delivery.ok and not delivery.config_error
    assert "within 1s" in delivery.error
    assert len(standin.received) == 1  # the deadline is spent: no retry
    # The contract is the 1 s deadline; the slack is for a busy 2-CPU CI machine.
    assert 0.9 <= seconds < 2.5
    assert_no_token(delivery.error)


def test_a_telegram_that_sends_an_endless_answer_is_read_no_further_than_64_kb(standin):
    import resource

    from tests.telegram_standin import endless_body

    standin.always(endless_body())
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    delivery, seconds = _timed_send(TelegramClient(TOKEN, standin.api_url, timeout=10.0))
    assert not delivery.ok and delivery.config_error
    assert "64 KB" in delivery.error and "api_url" in delivery.error
    assert seconds < 5  # cut at 64 KB, long before the 10 s deadline (generous for busy CI)
    grown_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kb < 50_000  # reading on would take all the memory there is


def test_a_normal_answer_from_a_real_server_is_delivered(standin):
    delivery = TelegramClient(TOKEN, standin.api_url, timeout=5.0).send("-100123", "<b>hello</b>")
    assert delivery.ok
    assert [r.text for r in standin.delivered] == ["<b>hello</b>"]
