"""Making outside text printable: the one place that decides how a hostile value looks.

File names, process names, database values and HTTP bodies come from the outside
world. A file name that is not UTF-8 reaches Python as lone surrogates
(surrogateescape), which no UTF-8 writer accepts (stdout in a UTF-8 locale, the
Telegram splitter); a control character or a terminal escape (`ESC [ 2 J`) would act
on the operator's terminal. `printable` shows both the way `ls -b` and Python do:
the undecodable byte 0xff as `\\xff`, ESC as `\\x1b`, a newline as `\\n`, a bidi
override as `\\u202e`. Backslashes are left as they are (a regex stays readable).

`printable` is applied where outside values enter the outputs (every check Result,
the daily report object, message values); `encode_guard` is the last line of defence
at the writers (stdout, the log file), so nothing undecodable can crash them.
"""

import codecs
import re

# Control characters (C0, DEL, C1), lone surrogates, line/paragraph separators and the
# bidi embeddings, overrides and isolates (they reorder what the terminal shows).
# (A pattern string, compiled on first use by re's cache: most runs never need it.)
_UNPRINTABLE = "[\x00-\x1f\x7f-\x9f\ud800-\udfff\u2028\u2029\u202a-\u202e\u2066-\u2069]"
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}

NAME_CHARS = 64  # a name from outside (a source, a host) shown in a message
ID_CHARS = 160   # a check id: the operator's own, long disk paths included, and what `silence` matches
ELLIPSIS = "…"


def _escape_char(char: str) -> str:
    code = ord(char)
    if char in _NAMED:
        return _NAMED[char]
    if 0xDC80 <= code <= 0xDCFF:  # a byte surrogateescape could not decode
        return f"\\x{code - 0xDC00:02x}"
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}"


def printable(text) -> str:
    """Given any value, return it as a str with nothing that can act on a terminal or crash a writer."""
    text = text if isinstance(text, str) else str(text)
    if text.isprintable():  # the usual case: one C-level scan
        return text
    return re.sub(_UNPRINTABLE, lambda m: _escape_char(m.group(0)), text)


def printable_tree(value):
    """`printable` applied to every string (and dict key) inside dicts, lists and tuples."""
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, dict):
        return {(printable(k) if isinstance(k, str) else k): printable_tree(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [printable_tree(v) for v in value]
    return value


def html_escape(value, quote: bool = False) -> str:
    """`str(value)` with & < > as HTML entities (and with `quote`, ' and " as markupsafe writes
    them): html.escape without the html package's 1-2 ms of imports a run."""
    text = str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text.replace("'", "&#39;").replace('"', "&#34;") if quote else text


def clip(text, limit: int = NAME_CHARS) -> str:
    """`printable(text)` cut to `limit` characters, the cut marked with an ellipsis."""
    text = printable(text)
    return text if len(text) <= limit else text[: max(limit - 1, 0)] + ELLIPSIS


# --- the writers' guard -------------------------------------------------------------------

def _handler(double: bool):
    def handle(exc):
        if not isinstance(exc, UnicodeEncodeError):
            raise exc
        out = "".join(_escape_char(c) for c in exc.object[exc.start:exc.end])
        return (out.replace("\\", "\\\\") if double else out), exc.end
    return handle


codecs.register_error("monitor.printable", _handler(False))
# Inside a JSON string a backslash must itself be escaped.
codecs.register_error("monitor.printable-json", _handler(True))


def encode_guard(text: str, json: bool = False) -> str:
    """Return `text` with any lone surrogate shown as `\\xff` (JSON-escaped if `json`).

    Costs one encode when the text is clean (the usual case).
    """
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        handler = "monitor.printable-json" if json else "monitor.printable"
        return text.encode("utf-8", handler).decode("utf-8")
