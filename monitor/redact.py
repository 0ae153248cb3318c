"""The one redaction layer: secrets registered here never leave the process in clear.

Every secret read at run time (bot token, Vault token, API keys) is registered with
`register`. `scrub` replaces them in any text; `RedactingFilter`, installed on every
log handler, scrubs records (urllib3's debug lines carry the bot token inside the
request URL); exception messages are passed through `scrub` before they are shown.
"""

import logging
import re
import threading

_lock = threading.Lock()
_secrets: list[str] = []  # longest first, so a secret containing another is masked whole
MASK = "***"
# Belt and braces: shapes of secrets that may reach text before anyone registered them.
# (Compiled on first use: most runs never log anything that could match.)
_SHAPES = r"bot\d{6,12}:[A-Za-z0-9_-]{30,}|\b(?:hvs|hvb|hvr)\.[A-Za-z0-9_-]{20,}"
_SHAPE_HINTS = ("bot", "hvs.", "hvb.", "hvr.")


# Real secrets (bot tokens, Vault tokens, API keys) are 20+ characters; a short one
# (a dev server's "root") would mask ordinary words, so it is left alone.
MIN_LENGTH = 8


def register(secret: str | None) -> None:
    """Remember a secret so that it is masked everywhere from now on."""
    if not secret or len(secret) < MIN_LENGTH:
        return
    with _lock:
        if secret not in _secrets:
            _secrets.append(secret)
            _secrets.sort(key=len, reverse=True)
    install()  # a secret is about to be used: whatever logs its use must be scrubbed


def install(*loggers: logging.Logger) -> None:
    """Put a RedactingFilter on every handler of `loggers` (default: root and `monitor`).

    Handler filters, not logger filters: urllib3's records propagate to the root
    handlers without passing any filter of the root logger itself.
    """
    for logger in loggers or (logging.getLogger(), logging.getLogger("monitor")):
        for handler in logger.handlers:
            if not any(isinstance(f, RedactingFilter) for f in handler.filters):
                handler.addFilter(RedactingFilter())


def scrub(text) -> str:
    """Return `text` (any object, as str) with every registered secret masked."""
    text = str(text)
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    if any(hint in text for hint in _SHAPE_HINTS):
        text = re.sub(_SHAPES, lambda m: "bot" + MASK if m.group(0).startswith("bot") else MASK, text)
    return text


def mask_url(url: str) -> str:
    """Return `url` fit to print: scheme and host kept, the path and query (where a
    ping URL carries its key: https://hc-ping.com/<uuid>) replaced by the mask."""
    scheme, sep, rest = str(url).partition("://")
    if not sep:
        return MASK
    host = rest.split("/", 1)[0].split("?", 1)[0].rsplit("@", 1)[-1]
    return f"{scheme}://{host}/{MASK}"


def register_url(url: str) -> None:
    """Register the path and query of a URL that is itself a secret (a ping URL), so
    whatever prints it by accident prints the mask."""
    rest = str(url).partition("://")[2].partition("?")[0]
    secret = rest.partition("/")[2].rstrip("/")
    if secret:
        register("/" + secret)


def clear() -> None:
    """Forget all secrets (tests; a long-lived process reloading its config)."""
    with _lock:
        _secrets.clear()


class RedactingFilter(logging.Filter):
    """Scrub the message, its arguments and any traceback of every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string is still logged, scrubbed
            message = f"{record.msg} {record.args}"
        record.msg, record.args = scrub(message), ()
        if record.exc_info:
            import traceback

            record.exc_text = scrub("".join(traceback.format_exception(*record.exc_info)))
            record.exc_info = None
        for key, value in list(record.__dict__.items()):
            if isinstance(value, str) and key not in ("msg", "name", "levelname", "pathname",
                                                      "filename", "module", "funcName"):
                setattr(record, key, scrub(value))
        return True
