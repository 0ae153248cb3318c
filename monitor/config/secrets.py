"""Secrets never live in the config file, and never leave it.

`find_secrets` refuses a literal secret in the raw document (a token-shaped value, a
`password` key, a URL with a literal password or API key); `display` is the view
`config check` prints, URLs masked; `secret_sources` says where each secret would come
from without reading it; `exposure_warnings` says who may read the file naming them.
"""

import os
import re
import stat

from monitor import redact
from monitor.config.fields import PLACEHOLDER, UrlValue
from monitor.redact import mask_url
from monitor.results import Threshold
from monitor.units import Duration, Size

_SECRET_KEYS = {"token", "bot_token", "password", "passwd", "secret", "api_key", "apikey",
                "vault_token", "secret_id", "private_key"}
# What a token looks like is defined once, in monitor.redact (which masks the same shapes).
_TELEGRAM_TOKEN, _VAULT_TOKEN = redact.TELEGRAM_TOKEN, redact.VAULT_TOKEN
_SECRET_HEADER = r"(?i)auth|key|token|secret|password|cookie"
_URL_PASSWORD = r"(?i)[a-z+]+://[^/@:]*:([^/@]+)@"
_URL_START = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_SECRET_HINT = "secrets may not be stored in the config file"


def find_secrets(node, path, errors, found):
    """Append an error per secret in `node` to `errors`, and each secret value to `found`."""
    if isinstance(node, dict):
        for key, value in node.items():
            sub = f"{path}.{key}" if path else key
            if key.lower() in _SECRET_KEYS:
                errors.append(f"{sub}: {_SECRET_HINT}; use token_env or token_file instead")
            elif path.endswith("headers") and isinstance(value, str) and re.search(_SECRET_HEADER, key) \
                    and not value.startswith("env:"):
                errors.append(f'{sub}: {_SECRET_HINT}; write "env:VARIABLE" to read it from the environment')
            else:
                find_secrets(value, sub, errors, found)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            find_secrets(value, f"{path}[{i}]", errors, found)
    elif isinstance(node, str):
        if re.search(_TELEGRAM_TOKEN, node) or re.fullmatch(_VAULT_TOKEN, node.strip()):
            errors.append(f"{path}: looks like a token; {_SECRET_HINT}")
            found.append(node)
        elif _URL_START.match(node):
            problem = _url_secret(node)
            if problem:
                errors.append(f"{path}: {problem}")
                found.append(node)


def _only_placeholders(value: str) -> bool:
    return bool(value) and not PLACEHOLDER.sub("", value)


def _url_secret(url: str) -> str | None:
    """Say why a URL holds a literal secret (a password in the userinfo, a value for a
    query parameter named like a key); None when every secret in it is a ${NAME}."""
    password = re.match(_URL_PASSWORD, url)
    if password and not _only_placeholders(password.group(1)):
        return (f"the URL contains a password; {_SECRET_HINT} (write ${{NAME}} to read it from "
                "the environment, or use PGPASSWORD or ~/.pgpass)")
    query = url.partition("?")[2].partition("#")[0]
    for pair in re.split("[&;]", query):
        name, sep, value = pair.partition("=")
        if sep and value and name.lower() in redact.SECRET_QUERY_NAMES and not _only_placeholders(value):
            return (f'the URL holds a literal value for the query parameter "{name}"; {_SECRET_HINT} '
                    f"(write {name}=${{NAME}} to read it from the environment variable NAME)")
    return None


def masked(errors: list[str], secrets: list[str]) -> list[str]:
    """Other checks of a field echo its value ("got ..."): a refused secret must not."""
    for secret in secrets:
        errors = [e.replace(secret, "****") for e in errors]
    return errors


def exposure_warnings(path: str | None, config: dict) -> list[str]:
    """Given the config file's path and the config loaded from it, return who-may-read warnings.

    A config file that others may read and that names a token file tells them where
    the token is kept; a telegram.token_file that group or others may read gives the
    token away (vault.token_file is checked by `vault_secrets.read_token` when used).
    Reads file modes only, never a token; `build` stays pure.
    """
    named = [(f"{section}.token_file", config[section]["token_file"]) for section in ("vault", "telegram")
             if config.get(section) and config[section].get("token_file")]
    if (config.get("vault") or {}).get("scraper_token_file"):  # read_token checks its mode when used
        named.append(("vault.scraper_token_file", config["vault"]["scraper_token_file"]))
    warnings = []
    if path and named:
        try:
            mode = os.stat(path).st_mode
        except OSError:
            mode = 0
        if mode & 0o004:
            warnings.append(f"{path} is readable by others (mode {stat.S_IMODE(mode):04o}) and names "
                            f"{', '.join(key for key, _ in named)}; run: chmod o-r {path}")
    for key, token_file in named:
        if key != "telegram.token_file":
            continue
        try:
            mode = os.stat(token_file).st_mode
        except OSError:
            continue  # a missing file is said when the token is read
        if stat.S_ISREG(mode) and mode & 0o077:
            warnings.append(f"{key} {token_file} is accessible by group or others "
                            f"(mode {stat.S_IMODE(mode):04o}); run: chmod 600 {token_file}")
    return warnings


def display(config: dict) -> dict:
    """Return the config as JSON-friendly values in the units the user wrote."""
    def show(value):
        if isinstance(value, UrlValue):  # the template: never the ping key it was filled with
            return redact.clean_url(value.template)
        if isinstance(value, str) and _URL_START.match(value):  # query values, user:password@
            return redact.clean_url(value)
        if isinstance(value, (Duration, Size)):
            return value.text
        if isinstance(value, Threshold):
            return {"warning": show(value.warning), "critical": show(value.critical)}
        if isinstance(value, dict):
            return {k: show(v) for k, v in value.items()}
        if isinstance(value, list):
            return [show(v) for v in value]
        return value
    shown = show(config)
    for key, url in (shown.get("heartbeat") or {}).items():
        if url and not isinstance(config["heartbeat"][key], UrlValue):  # a literal ping URL is its key
            shown["heartbeat"][key] = mask_url(url)
    return shown


def secret_sources(config: dict, environ=os.environ) -> dict:
    """Say where each secret would come from and whether it is there, never its value."""
    out = {}
    for section in ("vault", "telegram"):
        table = config.get(section)
        if not table:
            continue
        if table.get("token_env"):
            present = bool(environ.get(table["token_env"]))
            out[f"{section}.token_env"] = f"${table['token_env']} ({'set, ****' if present else 'not set'})"
        if table.get("token_file"):
            exists = os.path.isfile(table["token_file"])
            out[f"{section}.token_file"] = f"{table['token_file']} ({'present' if exists else 'missing'})"
        if table.get("token_vault"):
            out[f"{section}.token_vault"] = table["token_vault"]
    vault = config.get("vault") or {}
    if vault.get("scraper_token_env"):
        present = bool(environ.get(vault["scraper_token_env"]))
        out["vault.scraper_token_env"] = f"${vault['scraper_token_env']} ({'set, ****' if present else 'not set'})"
    if vault.get("scraper_token_file"):
        exists = os.path.isfile(vault["scraper_token_file"])
        out["vault.scraper_token_file"] = f"{vault['scraper_token_file']} ({'present' if exists else 'missing'})"
    return out
