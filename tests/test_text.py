"""Printable text (issue 11, item 3): outside values never reach the operator raw.

`monitor.text.printable` on its own, and end to end: what Telegram answers reaches
stderr escaped. (The backup file name that is not UTF-8 is in `test_backups.py`,
database values in `test_report.py`, the property tests in `faults/test_fuzz.py`.)
"""

import json
import os
import subprocess

import pytest

from monitor.text import clip, encode_guard, printable, printable_tree
from tests.conftest import MONITOR, clean_env
from tests.telegram_standin import Answer, TelegramStandIn

TOKEN = "123456789:AAFAKEtokenFAKEtokenFAKEtokenFAKE12"


@pytest.mark.parametrize("raw, shown", [
    (os.fsdecode(b"db-\xff\xfe.sql.gz"), "db-\\xff\\xfe.sql.gz"),   # not UTF-8: the bytes, as ls -b shows them
    ("red \x1b[31m alert\x07", "red \\x1b[31m alert\\x07"),          # terminal escape, bell
    ("two\nlines\r\tx", "two\\nlines\\r\\tx"),
    ("\x9b2J csi", "\\x9b2J csi"),                                    # the one-byte C1 CSI
    ("evil\u202egnp.exe", "evil\\u202egnp.exe"),                      # bidi override
    ("uniswap é 🚀 👨‍👩‍👧 a\\d+", "uniswap é 🚀 👨‍👩‍👧 a\\d+"),          # ordinary text is left alone
])
def test_printable_escapes_what_would_act_on_a_terminal_and_keeps_the_rest(raw, shown):
    assert printable(raw) == shown
    assert printable(shown) == shown


def test_a_tree_of_details_is_printable_keys_included_and_numbers_untouched():
    tree = {"files": [os.fsdecode(b"a\xff")], os.fsdecode(b"k\xff"): {"n": 1, "ok": True, "x": None}}
    assert printable_tree(tree) == {"files": ["a\\xff"], "k\\xff": {"n": 1, "ok": True, "x": None}}


def test_clip_cuts_names_to_64_characters_with_an_ellipsis():
    assert clip("s" * 200_000) == "s" * 63 + "…"
    assert clip("short") == "short"


def test_the_writers_guard_shows_a_stray_surrogate_as_bytes_and_keeps_json_valid():
    assert encode_guard("a\udcffb") == "a\\xffb"
    assert json.loads(encode_guard(json.dumps({"k": "a\udcffb"}, ensure_ascii=False), json=True)) == {"k": "a\\xffb"}


def test_what_telegram_answers_reaches_stderr_escaped(tmp_path):
    body = {"ok": False, "error_code": 401, "description": "Unauthorized \x1b[2J\x1b]0;pwned\x07"}
    with TelegramStandIn() as telegram:
        telegram.always(Answer(401, json.dumps(body).encode()))
        (tmp_path / "monitor.toml").write_text(
            '[system]\ndisk_percent = { warning = 0, critical = 0 }\nnetwork_interfaces = ["lo"]\n'
            f'[telegram]\nchat_ids = ["-100123"]\napi_url = "{telegram.api_url}"\n')
        proc = subprocess.run([MONITOR, "health", "--format", "json", "--config", str(tmp_path / "monitor.toml")],
                              cwd=tmp_path, env=clean_env({"TELEGRAM_BOT_TOKEN": TOKEN}), capture_output=True,
                              timeout=60, stdin=subprocess.DEVNULL)
    assert telegram.received
    stderr = proc.stderr.decode("utf-8")
    assert "telegram configuration error: Telegram 401" in stderr
    assert "\x1b" not in stderr and "\x07" not in stderr
    assert "Unauthorized \\x1b[2J\\x1b]0;pwned\\x07" in stderr
    assert "Traceback" not in stderr


def test_verbose_log_lines_on_stderr_show_a_hostile_file_name_escaped(tmp_path):
    import gzip

    (tmp_path / "b").mkdir()
    with open(os.path.join(os.fsencode(tmp_path / "b"), b"db-\xff\x1b[2J.gz"), "wb") as handle:
        handle.write(gzip.compress(b"dump")[:-4])  # truncated: a critical record names the file
    (tmp_path / "monitor.toml").write_text('[[backups]]\nname = "db"\npath = "b/*.gz"\nverify = "gzip"\n'
                                           'min_free_percent = 0\n')
    proc = subprocess.run([MONITOR, "backup-check", "-v", "--format", "json", "--config",
                           str(tmp_path / "monitor.toml")], cwd=tmp_path, env=clean_env({"LANG": "C.UTF-8"}),
                          capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode == 2
    stderr = proc.stderr.decode("utf-8")
    assert "ERROR monitor: backup:db critical: " in stderr and "db-\\xff\\x1b[2J.gz" in stderr
    assert "\x1b" not in stderr and "Traceback" not in stderr
