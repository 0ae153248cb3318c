"""Vault access: which URL and token to use, an hvac client that gives up in time, KV v2 secrets.

The Vault checks (`monitor/checks/vault.py`) and anything that needs a secret kept in
Vault (the Telegram bot token) go through here. No message made here ever holds the
token or a secret value: they name files, URLs, paths and keys only.
hvac and requests are imported on first use, so a run without Vault never loads them.
"""

import json
import os
import stat
import time

from monitor import redact as redaction
from monitor.redact import clean_url

DEFAULT_URL = "http://127.0.0.1:8200"
DEFAULT_TIMEOUT = 5.0
MAX_REDIRECTS = 3  # each hop may take the whole timeout: a loop ends soon


class SecretError(Exception):
    """A secret could not be read; the message says why, never what the secret is.

    `reason` sorts it for the `vault-secrets` check: "forbidden" (403), "missing" (404,
    no such mount), "no key", "invalid" (a malformed reference), "no token", or "error"
    (Vault unreachable, sealed, out of time: nothing was learnt about the secret).
    """

    def __init__(self, message: str, reason: str = "error"):
        super().__init__(message)
        self.reason = reason


# --- the token -------------------------------------------------------------------------

def read_token(cfg: dict, environ=os.environ, which: str = "token", section: str = "vault") -> tuple[str | None, list[str]]:
    """Given the `vault` config (or another `section` with `token_env`/`token_file`, such as
    `alertmanager`), return (token or None, warnings).

    The environment variable named by `token_env` wins when it is set and not empty;
    otherwise `token_file` is read and stripped. `which="scraper_token"` reads the
    scraper's token from `scraper_token_env` / `scraper_token_file` the same way.
    Warnings name the variable or the file, never their content.
    """
    name = cfg.get(f"{which}_env") or ""
    if name and environ.get(name, "").strip():
        return environ[name].strip(), []
    path = cfg.get(f"{which}_file") or ""
    if not path:
        return None, []
    key, warnings = f"{section}.{which}_file", []
    try:
        mode = os.stat(path).st_mode
        if stat.S_ISREG(mode) and mode & 0o077:
            warnings.append(f"{key} {path} is accessible by group or others "
                            f"(mode {stat.S_IMODE(mode):04o}); run: chmod 600 {path}")
        with open(path, encoding="utf-8") as handle:
            token = handle.read().strip()
    except FileNotFoundError:
        return None, warnings + [f"{key} {path}: no such file"]
    except UnicodeDecodeError:
        return None, warnings + [f"{key} {path}: not a text file"]
    except OSError as exc:
        return None, warnings + [f"{key} {path}: cannot read: {exc.strerror or type(exc).__name__}"]
    if not token:
        return None, warnings + [f"{key} {path} is empty"]
    return token, warnings


# --- the connection --------------------------------------------------------------------

def vault_url(cfg: dict, environ=os.environ) -> tuple[str, str]:
    """Return (url, where it came from): `$VAULT_ADDR` wins over `vault.url`, as for the CLI."""
    from_env = environ.get("VAULT_ADDR", "").strip()
    if from_env:
        return from_env, "VAULT_ADDR"
    return cfg.get("url") or DEFAULT_URL, "vault.url"


def url_problem(url: str) -> str | None:
    """Say what is wrong with a Vault URL (no scheme, no host, bad port), or None."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number or too big
    except ValueError:
        return "malformed URL"
    if parts.scheme.lower() not in ("http", "https"):
        return "expected http://HOST:PORT or https://HOST:PORT"
    if not parts.hostname:
        return "no host name"
    return None


def shown_url(url: str) -> str:
    """The URL fit for messages: no user:password@ part, query values masked."""
    return clean_url(url)


def timeout_of(cfg: dict) -> float:
    return float(cfg.get("timeout") or DEFAULT_TIMEOUT)


def ca_cert_problem(cfg: dict) -> str | None:
    ca_cert = cfg.get("ca_cert") or ""
    if ca_cert and not os.path.isfile(ca_cert):
        return f"vault.ca_cert {ca_cert}: no such file"
    return None


def open_client(cfg: dict, token: str | None, url: str, seconds: float | None = None, certificates=None):
    """Return an hvac client for `url` that gives up after `vault.timeout`.

    hvac waits 30 s by default and requests' (connect, read) pair can add up to twice
    the timeout, so the request gets urllib3's `total` budget instead. A token of ""
    keeps hvac from picking one up from $VAULT_TOKEN or ~/.vault-token on its own.
    With `certificates` (a `peer_certs.PeerCertificates`), each answer's TLS connection
    records the certificate Vault showed, for the `tls:<host:port>` check.
    """
    import hvac
    from urllib3.util import Timeout

    seconds = timeout_of(cfg) if seconds is None else seconds
    verify = cfg.get("ca_cert") or cfg.get("verify", True)
    if verify is False:
        # The operator chose this in the config; one warning per request would fill cron mail.
        import urllib3

        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
    session = _same_origin_session(verify)
    if certificates is not None:
        session.hooks["response"].append(lambda resp, **_: _record_certificate(certificates, resp))
    return hvac.Client(url=url, token=token or "", verify=verify, session=session,
                       timeout=Timeout(connect=seconds, read=seconds, total=seconds))


def _record_certificate(certificates, resp) -> None:
    """Note the leaf certificate of the connection `resp` came on (still open: the body is unread)."""
    sock = getattr(getattr(resp.raw, "connection", None), "sock", None)
    if not hasattr(sock, "getpeercert"):
        return  # plain http
    try:
        der = sock.getpeercert(binary_form=True)
    except (ValueError, OSError):
        return
    _, host, port = _origin(resp.url)
    certificates.saw(host, port, der)


def record_failure(certificates, url: str, exc: BaseException, seconds: float = 0.0) -> None:
    """Note that a request to an https `url` got no certificate, and why. A certificate the
    verification refused is read by one handshake without verification, within `seconds`
    (what is left of the check's timeout), for its dates."""
    origin = _origin(url)
    if certificates is None or len(origin) != 3 or origin[0] != "https":
        return
    from monitor.peer_certs import no_certificate, unverified_leaf

    reason, code, at_tls = no_certificate(exc)
    der = unverified_leaf(origin[1], origin[2], seconds) if code is not None and seconds > 0 else None
    certificates.failed(origin[1], origin[2], reason, at_tls, code, der)


class RedirectRefused(Exception):
    """Vault answered with a redirect to another scheme, host or port: not followed,
    as requests would send X-Vault-Token along. `str()` names the target's origin only."""

    def __init__(self, status: int, origin: str):
        super().__init__(f"Vault redirected (HTTP {status}) to another host, {origin}; not followed "
                         "with the token (set vault.url to the node that answers)")
        self.status, self.origin = status, origin


def _origin(url: str) -> tuple:
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        return scheme, (parts.hostname or "").lower(), parts.port or {"http": 80, "https": 443}.get(scheme)
    except ValueError:
        return ("?",)


def _same_origin_session(verify):
    """A requests session that follows a redirect only to the origin it was sent to
    (a standby forwarding to itself); any other raises RedirectRefused before the
    next request is made, so the token never leaves for another host."""
    import requests

    class SameOriginSession(requests.Session):
        def get_redirect_target(self, resp):
            target = super().get_redirect_target(resp)
            if target is not None:
                from urllib.parse import urljoin

                try:
                    absolute = urljoin(resp.url, target)
                except ValueError:
                    absolute = "invalid:"
                if _origin(absolute) != _origin(resp.url):
                    resp.close()
                    origin = _origin(absolute)
                    shown = f"{origin[0]}://{origin[1]}:{origin[2]}" if len(origin) == 3 else "an invalid URL"
                    raise RedirectRefused(resp.status_code, shown)
            return target

    session = SameOriginSession()
    # hvac lets a given session's `verify` override its own argument: set it here.
    session.verify = verify
    session.max_redirects = MAX_REDIRECTS
    return session


def network_errors() -> tuple:
    """The exceptions that mean "no usable answer from this URL" (not a Vault error code)."""
    import requests

    # OSError: requests raises it for a ca_cert bundle it cannot load.
    return requests.RequestException, OSError


def describe_failure(exc: BaseException, url: str, timeout: float) -> str:
    """Given a requests/urllib3 failure, return a short reason like "connection refused".

    The wording is the one every client uses (monitor.net_errors); a certificate not
    trusted adds the setting that fixes it.
    """
    from urllib.parse import urlsplit

    from monitor.net_errors import describe

    try:
        host = urlsplit(url).hostname or url
    except ValueError:
        host = url
    return describe(exc, host=host, timeout=timeout, max_redirects=MAX_REDIRECTS, ca_option="vault.ca_cert")


def vault_errors(exc) -> str:
    """The `errors` Vault sent with an hvac exception, joined and kept short."""
    errors = getattr(exc, "errors", None)
    text = ", ".join(str(e) for e in errors) if isinstance(errors, list) else ""
    return " ".join(text.split())[:200]


def redact(text: str, *secrets: str | None) -> str:
    """Mask the given secrets, and every one registered with `monitor.redact`, in `text`."""
    for secret in secrets:
        redaction.register(secret)
    return redaction.scrub(text)


# --- KV v2 secrets --------------------------------------------------------------------

def parse_ref(ref: str) -> tuple[str, str, str]:
    """Split "secret/monitor#telegram_token" into (mount, path, key). Raise SecretError."""
    location, sep, key = ref.partition("#")
    mount, slash, path = location.strip("/").partition("/")
    if not sep or not key or not slash or not mount or not path.strip("/"):
        raise SecretError(f'invalid secret reference "{ref}": expected "mount/path#key", '
                          'like "secret/monitor#telegram_token"', "invalid")
    return mount, path.strip("/"), key


class SecretStore:
    """Secrets read from Vault's KV v2 during one run; each (mount, path) is read once.

    With `deadline` (a `clock()` time) every read gets only the time left before it, so
    a check reading many paths ends within its own timeout, not one timeout per path.
    """

    def __init__(self, cfg: dict, token: str | None, environ=os.environ, deadline: float | None = None,
                 clock=time.monotonic):
        self._cfg = cfg
        self._token = token
        self._url, self._url_from = vault_url(cfg, environ)
        self._client = None
        self._cache: dict[tuple[str, str], dict | SecretError] = {}
        self._deadline, self._clock = deadline, clock

    def __repr__(self) -> str:  # never the token
        return f"SecretStore(url={shown_url(self._url)!r})"

    def _data(self, ref: str) -> tuple[dict, str, str]:
        mount, path, key = parse_ref(ref)
        if (mount, path) not in self._cache:
            try:
                self._cache[mount, path] = self._read(mount, path)
            except SecretError as exc:
                self._cache[mount, path] = exc
        data = self._cache[mount, path]
        if isinstance(data, SecretError):
            raise SecretError(str(data), data.reason)
        if key not in data:
            keys = ", ".join(sorted(map(str, data))) or "none"
            raise SecretError(f'{mount}/{path}: no key "{key}" (keys there: {keys})', "no key")
        return data, f"{mount}/{path}", key

    def get(self, ref: str) -> str:
        """Given "mount/path#key", return the value. Raise SecretError saying why not."""
        data, _, key = self._data(ref)
        value = data[key]
        return value if isinstance(value, str) else json.dumps(value)

    def readable(self, ref: str) -> bool:
        """Given "mount/path#key", return True when its key holds a value, False when the
        value is empty (blank, null, an empty list or table). Raise SecretError saying why
        it cannot be read. The value itself never leaves the store."""
        data, _, key = self._data(ref)
        value = data[key]
        if isinstance(value, str):
            return bool(value.strip())
        return value is not None and value != [] and value != {}

    def _read(self, mount: str, path: str) -> dict:
        where = f"{mount}/{path}"
        if not self._token:
            raise SecretError(f"{where}: no Vault token (set ${self._cfg.get('token_env') or 'VAULT_TOKEN'} "
                              "or vault.token_file)", "no token")
        problem = url_problem(self._url)
        if problem:
            raise SecretError(f'{where}: invalid Vault URL "{shown_url(self._url)}" '
                              f"(from {self._url_from}): {problem}")
        problem = ca_cert_problem(self._cfg)
        if problem:
            raise SecretError(f"{where}: {problem}")
        from hvac import exceptions as hv

        seconds = None
        if self._deadline is not None:
            seconds = self._deadline - self._clock()
            if seconds <= 0:
                raise SecretError(f"{where}: not read: vault.timeout ({timeout_of(self._cfg):g}s) was spent "
                                  "on the paths before it")
            seconds = max(seconds, 0.2)  # the runner's margin covers this much
            self._client = None  # hvac fixes the timeout per client: each read gets the time left
        if self._client is None:
            self._client = open_client(self._cfg, self._token, self._url, seconds)
        reason = "error"
        try:
            answer = self._client.secrets.kv.v2.read_secret_version(
                mount_point=mount, path=path, raise_on_deleted_version=True)
        except hv.Forbidden:
            reason = "forbidden"
            message = (f"{where}: permission denied (token revoked or expired, or its policy "
                       f"lacks read on {mount}/data/{path})")
        except hv.InvalidPath as exc:
            reason = "missing"
            if "no handler for route" in vault_errors(exc):
                message = f'{where}: no secrets engine is mounted at "{mount}"'
            else:
                message = (f'{where}: no such secret (missing or deleted, or "{mount}" is not '
                           "a KV version 2 mount)")
        except RedirectRefused as exc:
            message = f"{where}: {exc}"
        except hv.VaultDown:
            message = f"{where}: Vault is sealed"
        except hv.VaultError as exc:
            message = f"{where}: Vault answered {type(exc).__name__}: {vault_errors(exc) or 'no details'}"
        except network_errors() as exc:
            message = (f"{where}: Vault unreachable at {shown_url(self._url)}: "
                       f"{describe_failure(exc, self._url, timeout_of(self._cfg))}")
        else:
            body = answer.get("data") if isinstance(answer, dict) else None
            data = body.get("data") if isinstance(body, dict) else None
            if isinstance(data, dict):
                return data
            message = f"{where}: unexpected answer from Vault (not a KV version 2 secret)"
        raise SecretError(redact(message, self._token), reason)
