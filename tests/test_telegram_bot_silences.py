"""`monitor silence` for the silences the bot makes too (issue 16): at most a year, whatever was
typed; a hand-edited absurd time read as "far future", never a traceback; the author shown."""

import json

import pytest

from monitor.cli import main
from tests.test_telegram_bot import Install, telegram  # noqa: F401 - fixture


@pytest.fixture
def install(tmp_path, telegram):
    return Install(tmp_path, telegram)


def test_silence_add_refuses_more_than_a_year_in_one_line(install, capsys):
    path = install.folder / "monitor.toml"
    path.write_text(install.toml())
    for duration in ("99999999999999d", "366d"):
        assert main(["silence", "add", "disk:*", "--for", duration, "--config", str(path)]) == 3
        err = capsys.readouterr().err
        assert len(err.splitlines()) == 1 and "at most 365d" in err and "Traceback" not in err
    assert not (install.state / "silences.json").exists()
    assert main(["silence", "add", "disk:*", "--for", "365d", "--config", str(path)]) == 0


def test_silence_list_shows_the_author_and_reads_absurd_times(install, capsys):
    path = install.folder / "monitor.toml"
    path.write_text(install.toml())
    install.state.mkdir()
    (install.state / "silences.json").write_text(json.dumps({"silences": [
        {"id": "tg1000", "pattern": "disk:*", "until": 1e300, "reason": "resize", "created": 0,
         "author": "@anna"},
        {"id": "ab12", "pattern": "cpu", "until": 8.64e18, "reason": "", "created": 0}]}))
    assert main(["silence", "list", "--config", str(path)]) == 0
    out = capsys.readouterr()
    assert out.out.splitlines() == ["tg1000  disk:*                   until far future  by @anna  resize",
                                    "ab12  cpu                      until far future"]
    assert out.err == ""
