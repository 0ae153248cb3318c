"""The Telegram bot token: from the environment, a file, or Vault (with a kept copy).

Resolved only when a run has messages to deliver. A token read from Vault is kept in
the state folder (0600) so the alert about Vault itself still goes out while Vault
is sealed or down; that copy is the one state file that holds a secret.
"""

import json
import logging
import os

from monitor import redact, state

log = logging.getLogger("monitor")

TOKEN_COPY = "telegram-token-from-vault.json"  # the one state file that holds a secret


def resolve_token(config: dict, environ=os.environ, copy_folder: str | None = None) -> tuple[str | None, str]:
    """Return (bot token or None, where it came from / every source tried and why it failed).

    Sources in order: `token_env`, `token_file`, `token_vault`. With `copy_folder`
    (the state folder of a run), a token read from Vault is kept there in its own
    0600 file, and that copy is used when Vault cannot be read (sealed, down, token
    expired), so the alert about Vault itself still goes out.
    """
    tg = config["telegram"]
    tried = []
    name = tg.get("token_env")
    if name:
        value = environ.get(name, "").strip()
        if value:
            redact.register(value)
            return value, f"${name}"
        tried.append(f"${name} is not set")
    if tg.get("token_file"):
        path = tg["token_file"]
        try:
            with open(path, encoding="utf-8") as handle:
                token = handle.read().strip()
        except OSError as exc:
            tried.append(f"cannot read telegram.token_file {path}: {exc.strerror or type(exc).__name__}")
        except UnicodeDecodeError:
            tried.append(f"telegram.token_file {path} is not a text file")
        else:
            if token:
                redact.register(token)
                return token, path
            tried.append(f"telegram.token_file {path} is empty")
    if tg.get("token_vault"):
        ref = tg["token_vault"]
        token, why = _token_from_vault(config, environ)
        if token:
            if copy_folder:
                _keep_copy(copy_folder, ref, token)
            return token, f"vault:{ref}"
        tried.append(why)
        copy = _read_copy(copy_folder, ref) if copy_folder else None
        if copy:
            log.warning("%s; using the bot token last read from Vault (kept in %s)", why,
                        os.path.join(copy_folder, TOKEN_COPY), extra={"event": "bot_token_copy"})
            return copy, f"the copy of vault:{ref} kept in {os.path.join(copy_folder, TOKEN_COPY)}"
    if not tried:
        tried.append("no telegram.token_env, token_file or token_vault")
    return None, "; ".join(tried)


def _token_from_vault(config: dict, environ) -> tuple[str | None, str]:
    ref = config["telegram"]["token_vault"]
    if not config.get("vault"):
        return None, f"telegram.token_vault {ref} needs a [vault] section"
    from monitor.vault_secrets import SecretError, SecretStore, read_token

    vault_token, warnings = read_token(config["vault"], environ)
    redact.register(vault_token)
    for warning in warnings:
        log.warning("%s", warning)
    if not vault_token:
        return None, f"telegram.token_vault {ref}: no Vault token (vault.token_env or vault.token_file)"
    try:
        token = SecretStore(config["vault"], vault_token, environ).get(ref)
    except SecretError as exc:
        return None, redact.scrub(f"telegram.token_vault {ref}: {exc}")
    token = token.strip()
    if not token:
        return None, f"telegram.token_vault {ref} is empty"
    redact.register(token)
    return token, f"vault:{ref}"


def _read_copy(folder: str, ref: str) -> str | None:
    try:  # not state.read_json: a damaged copy is not set aside (it may hold most of a token)
        data = json.loads(state.read_file(os.path.join(folder, TOKEN_COPY), 65536))
    except (OSError, ValueError):
        return None
    token = data.get("token") if isinstance(data, dict) and data.get("ref") == ref else None
    if not isinstance(token, str) or not token.strip():
        return None
    redact.register(token.strip())
    return token.strip()


def _keep_copy(folder: str, ref: str, token: str) -> None:
    """Replace the copy of the Vault-held token when it changed (0600, never logged)."""
    path = os.path.join(folder, TOKEN_COPY)
    try:
        if _read_copy(folder, ref) == token and os.lstat(path).st_mode & 0o077 == 0:
            return
        state.atomic_write(path, json.dumps({"ref": ref, "token": token}).encode(), mode=0o600)
    except (state.StateError, OSError) as exc:
        log.warning("could not keep a copy of the bot token read from Vault in %s: %s", folder,
                    getattr(exc, "strerror", None) or type(exc).__name__, extra={"event": "bot_token_copy_error"})
