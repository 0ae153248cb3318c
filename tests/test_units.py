"""Durations and sizes as users write them in the config, and as the messages print them."""

import pytest

from monitor.units import format_duration, format_size, parse_duration, parse_size


@pytest.mark.parametrize("text, seconds", [
    ("30s", 30), ("15m", 900), ("26h", 93600), ("7d", 604800), ("1h30m", 5400),
    ("250ms", 0.25), ("2w", 1209600), (" 5s ", 5), ("1.5h", 5400), ("1d 2h", 93600),
])
def test_durations_parse_to_seconds(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


def test_a_duration_remembers_how_the_user_wrote_it():
    assert parse_duration("15m").text == "15m"
    assert parse_duration(" 1h30m ").text == "1h30m"


@pytest.mark.parametrize("text", ["fast", "-5s", "5", "", "5 parsecs", "s", "1h30", "5S5", "²s"])
def test_malformed_durations_are_refused_with_an_example(text):
    with pytest.raises(ValueError) as info:
        parse_duration(text)
    assert str(info.value) == f'expected a duration like "5s", got "{text}"'


def test_a_number_is_not_a_duration():
    with pytest.raises(ValueError, match='expected a duration like "5s", got 5'):
        parse_duration(5)


@pytest.mark.parametrize("text, nbytes", [
    ("500KB", 500_000), ("1MB", 1_000_000), ("2GiB", 2 * 2**30), ("1KiB", 1024),
    ("1.5KB", 1500), ("10 MiB", 10 * 2**20), ("123", 123), ("7b", 7), ("1tb", 10**12),
    (4096, 4096), (0, 0),
])
def test_sizes_parse_to_bytes(text, nbytes):
    assert parse_size(text) == nbytes


@pytest.mark.parametrize("text", ["lots", "1XB", "-1MB", "", "MB", True, 1.5, -1])
def test_malformed_sizes_are_refused_with_an_example(text):
    with pytest.raises(ValueError, match='expected a size like "1MB"'):
        parse_size(text)


def test_a_size_remembers_how_the_user_wrote_it():
    assert parse_size("1MB").text == "1MB"
    assert parse_size(2048).text == "2048B"


@pytest.mark.parametrize("seconds, text", [
    (0.25, "250ms"), (0, "0ms"), (1, "1s"), (90, "1m30s"), (3600, "1h"), (5400, "1h30m"),
    (86400, "1d"), (93784, "1d2h"), (604800, "7d"), (-90, "-1m30s"),
])
def test_durations_print_in_their_shortest_readable_form(seconds, text):
    assert format_duration(seconds) == text


@pytest.mark.parametrize("nbytes, text", [
    (0, "0 B"), (500, "500 B"), (1536, "1.5 KiB"), (3435973836, "3.2 GiB"),
    (5 * 2**40, "5.0 TiB"), (3 * 2**50, "3072.0 TiB"),
])
def test_sizes_print_with_binary_prefixes(nbytes, text):
    assert format_size(nbytes) == text


def test_a_duration_read_back_from_its_printed_form_is_the_same():
    for seconds in (1, 59, 61, 3599, 3600, 86399 - 59, 86400, 90000):
        text = format_duration(seconds)
        assert parse_duration(text) == seconds, text
