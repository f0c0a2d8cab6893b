"""OAuth2 access tokens for smarthost accounts, without I/O (SPEC 2.4, 5.6).

What a token needs, decided here; the HTTPS, the files and the clock are the
adapter's (``adapters/oauth2.py``) and the shell's (``shell/oauth2_login.py``):

- an account's ``oauth2`` table (as ``core/accounts`` parsed it) as
  ``OAuth2Settings`` (``settings_for``), and its endpoints and scope: a ``provider`` preset
  (Microsoft, Google) filled in, explicit ``token_url``/``device_url``/``scope``
  taking precedence (``endpoints``);
- the form bodies of the RFC 6749 refresh-token grant (section 6), the RFC 8628
  device authorization request (3.1) and its token polling (3.4);
- the answers: a token response (5.1, 5.2) as ``Granted`` or ``Refused``, a
  device authorization (3.2) as ``DeviceAuthorization``; any octets give one of
  those or our own ``DataError`` (property-tested);
- the device flow's polling, one step at a time (``next_poll``: wait, wait 5 s
  longer after ``slow_down``, done, or our error);
- the access-token cache: its file text, and whether a cached token may still be
  used at ``now`` (until ``expires_at - CACHE_MARGIN``).

Tokens, refresh tokens, device codes and client secrets never reach a repr, an
error message or a log field: the values that hold them hide them, and a server's
error text is cut to printable ASCII with every secret we sent taken out
(``redact``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from dma.core.errors import ConfigError, DataError, DmaError, TempFailure, UnavailableError

if TYPE_CHECKING:
    from dma.core.accounts import OAuth2

CACHE_MARGIN = 300
"""Seconds before its expiry that a cached access token stops being used (5 min):
a token must outlive the SMTP session that sends it, and the clocks may differ."""

DEFAULT_INTERVAL = 5
"""RFC 8628 3.2: seconds between polls when the server names none."""

SLOW_DOWN_STEP = 5
"""RFC 8628 3.5: ``slow_down`` makes this and every later interval 5 s longer."""

MAX_INTERVAL = 300
"""A server's polling interval is capped here (a typo must not stall a login for hours)."""

MAX_ANSWER_OCTETS = 256 * 1024
"""An endpoint's answer larger than this is no token response."""

MAX_TOKEN_CHARS = 16 * 1024
"""An access or refresh token longer than this is refused (Microsoft's are ~2-3 KB)."""

MAX_EXPIRES_IN = 10 * 365 * 24 * 3600
"""An ``expires_in`` beyond ten years is nonsense, not a long-lived token."""

DESCRIPTION_CHARS = 300
"""A server's ``error_description`` is cut to this many characters in our messages."""

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
"""RFC 8628 3.4: the grant type of the device flow's token request."""

CACHE_VERSION = 1

MICROSOFT_BASE = "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/"


@dataclass(frozen=True, slots=True)
class Provider:
    """A provider preset: endpoints (``{tenant}`` filled in for Microsoft) and scope."""

    token_url: str
    device_url: str
    scope: str
    device_scope_allowed: bool = True
    """False where the provider refuses this scope in the device flow (Google and Gmail)."""


PROVIDERS: Mapping[str, Provider] = {
    # learn.microsoft.com: "v2-oauth2-device-code" (POST .../{tenant}/oauth2/v2.0/devicecode)
    # and "How to authenticate an IMAP, POP or SMTP application by using OAuth"
    # (scope https://outlook.office.com/SMTP.Send; offline_access for a refresh token).
    "microsoft": Provider(
        token_url=MICROSOFT_BASE + "token",
        device_url=MICROSOFT_BASE + "devicecode",
        scope="https://outlook.office.com/SMTP.Send offline_access",
    ),
    # developers.google.com: "OAuth 2.0 for TV and Limited-Input Device Applications"
    # and golang.org/x/oauth2/endpoints.Google; https://mail.google.com/ is Gmail's SMTP
    # scope, which Google's device flow refuses (invalid_scope): see README.
    "google": Provider(
        token_url="https://oauth2.googleapis.com/token",
        device_url="https://oauth2.googleapis.com/device/code",
        scope="https://mail.google.com/",
        device_scope_allowed=False,
    ),
}

_TENANT_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_")
_FORM_SAFE = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~")
_ERROR_CODE_CHARS = frozenset(chr(c) for c in range(0x20, 0x7F)) - {'"', "\\"}

# --- settings ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True, repr=False)
class OAuth2Settings:
    """One account's OAuth2 settings (its ``[accounts.NAME.oauth2]`` table).

    Either ``token_command`` (argv whose first stdout line is the access token) or
    pydma's own refresh: ``client_id``, ``refresh_token_file`` and a ``provider`` or
    a ``token_url``.  ``account`` names the account in every message.
    """

    account: str
    client_id: str | None = None
    refresh_token_file: str | None = None
    provider: str | None = None
    tenant: str = "common"
    token_url: str | None = None
    device_url: str | None = None
    scope: str | None = None
    client_secret: str | None = field(default=None, repr=False)
    token_command: tuple[str, ...] | None = None

    def __repr__(self) -> str:
        secret = "<secret hidden>" if self.client_secret is not None else None
        return (
            f"OAuth2Settings(account={self.account!r}, client_id={self.client_id!r}, "
            f"refresh_token_file={self.refresh_token_file!r}, provider={self.provider!r}, "
            f"tenant={self.tenant!r}, token_url={self.token_url!r}, "
            f"device_url={self.device_url!r}, scope={self.scope!r}, client_secret={secret}, "
            f"token_command={self.token_command!r})"
        )

    __str__ = __repr__

    @property
    def cache_file(self) -> str | None:
        """The access-token cache, beside the refresh token file (same owner, 0600)."""
        if self.refresh_token_file is None:
            return None
        return self.refresh_token_file + ".access"


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Where to ask and for what: the token endpoint, the device endpoint (None when
    neither a preset nor the account names one) and the scope (None: the server's)."""

    token_url: str
    device_url: str | None
    scope: str | None
    device_scope_allowed: bool = True


def settings_for(account: str, table: OAuth2) -> OAuth2Settings:
    """The settings of account ``account`` from its parsed ``oauth2`` table."""
    settings = OAuth2Settings(
        account=account,
        client_id=table.client_id,
        refresh_token_file=table.refresh_token_file,
        provider=table.provider,
        tenant=table.tenant or "common",
        token_url=table.token_url,
        device_url=table.device_url,
        scope=table.scope,
        client_secret=table.client_secret,
        token_command=table.token_command,
    )
    check_settings(settings)
    return settings


def _where(account: str, where: str | None) -> str:
    return where or f"[accounts.{account}.oauth2]"


def _table_error(account: str, where: str | None, text: str, hint: str) -> ConfigError:
    return ConfigError(f"account {account}: {text}", where=_where(account, where), hint=hint)


def check_settings(settings: OAuth2Settings, *, where: str | None = None) -> None:
    """ConfigError when ``settings`` cannot give a token: no way chosen, both ways
    chosen, a relative refresh token file, an unknown provider, a bad tenant or URL."""
    account = settings.account
    if settings.token_command is not None:
        mixed = [key for key in ("client_id", "refresh_token_file", "provider", "token_url")
                 if getattr(settings, key) is not None]
        if mixed:
            raise _table_error(account, where, f"oauth2 token_command excludes {mixed[0]}",
                               hint="keep token_command, or the refresh settings, not both")
        return
    if settings.client_id is None or settings.refresh_token_file is None:
        raise _table_error(
            account, where, "oauth2 needs client_id and refresh_token_file (or token_command)",
            hint='for example provider = "microsoft", client_id = "...", '
                 'refresh_token_file = "/var/lib/dma/oauth2/NAME.refresh"')
    if not settings.refresh_token_file.startswith("/"):
        raise _table_error(account, where, "oauth2 refresh_token_file must be an absolute path",
                           hint="write the whole path, starting with /")
    endpoints(settings, where=where)


def _check_url(account: str, where: str | None, key: str, url: str) -> str:
    rest = url[len("https://"):] if url.lower().startswith("https://") else None
    host = (rest or "").split("/", 1)[0]
    if (rest is None or not host or "@" in host or len(url) > 2048
            or any(not 0x21 <= ord(c) <= 0x7E for c in url)):
        raise _table_error(account, where, f"oauth2 {key} must be an https:// URL",
                           hint="tokens travel only over verified HTTPS")
    return url


def endpoints(settings: OAuth2Settings, *, where: str | None = None) -> Endpoints:
    """The account's endpoints: its ``provider`` preset, with ``token_url``,
    ``device_url`` and ``scope`` replaced where the account gives them."""
    account = settings.account
    preset: Provider | None = None
    if settings.provider is not None:
        preset = PROVIDERS.get(settings.provider.lower())
        if preset is None:
            raise _table_error(account, where, f"unknown oauth2 provider {settings.provider!r}",
                               hint="use " + " or ".join(map(repr, PROVIDERS))
                               + ", or give token_url (and device_url, scope)")
    tenant = settings.tenant
    if not tenant or len(tenant) > 128 or not set(tenant) <= _TENANT_CHARS:
        raise _table_error(account, where, f"oauth2 tenant {tenant!r} is not a tenant name",
                           hint='use "common", "organizations", "consumers", '
                                "a tenant id or a domain")
    token_url = settings.token_url or (preset.token_url.format(tenant=tenant) if preset else None)
    if token_url is None:
        raise _table_error(account, where, "oauth2 needs a provider or a token_url",
                           hint='provider = "microsoft" or "google", or token_url = "https://..."')
    device_url = settings.device_url or (
        preset.device_url.format(tenant=tenant) if preset else None)
    scope = settings.scope if settings.scope is not None else (preset.scope if preset else None)
    allowed = preset.device_scope_allowed if preset and settings.scope is None else True
    return Endpoints(
        token_url=_check_url(account, where, "token_url", token_url),
        device_url=None if device_url is None else _check_url(
            account, where, "device_url", device_url),
        scope=scope,
        device_scope_allowed=allowed,
    )


# --- requests ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True, repr=False)
class FormPost:
    """One POST of an ``application/x-www-form-urlencoded`` body to ``url``.

    ``secrets`` are the values in the body that no message may show (the adapter
    takes them out of any text the server sends back)."""

    url: str
    body: bytes = field(repr=False)
    secrets: tuple[str, ...] = field(default=(), repr=False)

    def __repr__(self) -> str:
        return f"FormPost(url={self.url!r}, body=<{len(self.body)} octets hidden>)"

    __str__ = __repr__


def form_encode(pairs: Iterable[tuple[str, str]]) -> bytes:
    """``application/x-www-form-urlencoded`` (RFC 6749 appendix B): UTF-8, space as
    ``+``, everything but ``A-Z a-z 0-9 - . _ ~`` percent-encoded."""

    def encode(text: str) -> str:
        return "".join(
            chr(octet) if octet in _FORM_SAFE else "+" if octet == 0x20 else f"%{octet:02X}"
            for octet in text.encode("utf-8", "surrogatepass")
        )

    return "&".join(f"{encode(name)}={encode(value)}" for name, value in pairs).encode("ascii")


def _client_pairs(settings: OAuth2Settings) -> list[tuple[str, str]]:
    pairs = [("client_id", settings.client_id or "")]
    if settings.client_secret is not None:
        pairs.append(("client_secret", settings.client_secret))
    return pairs


def _secrets(settings: OAuth2Settings, *more: str) -> tuple[str, ...]:
    extra = () if settings.client_secret is None else (settings.client_secret,)
    return (*more, *extra)


def refresh_request(settings: OAuth2Settings, where: Endpoints, refresh_token: str) -> FormPost:
    """RFC 6749 6: the refresh-token grant (client credentials in the body, 2.3.1)."""
    pairs = [("grant_type", "refresh_token"), ("refresh_token", refresh_token)]
    pairs += _client_pairs(settings)
    if where.scope:
        pairs.append(("scope", where.scope))
    return FormPost(where.token_url, form_encode(pairs), _secrets(settings, refresh_token))


def device_request(settings: OAuth2Settings, where: Endpoints) -> FormPost:
    """RFC 8628 3.1: the device authorization request (client_id, scope)."""
    if where.device_url is None:
        raise ConfigError(
            f"account {settings.account}: no device authorization endpoint",
            where=_where(settings.account, None),
            hint='set provider = "microsoft", or device_url = "https://..."')
    pairs = [("client_id", settings.client_id or "")]
    if where.scope:
        pairs.append(("scope", where.scope))
    return FormPost(where.device_url, form_encode(pairs), _secrets(settings))


def device_token_request(settings: OAuth2Settings, where: Endpoints, device_code: str) -> FormPost:
    """RFC 8628 3.4: one poll of the token endpoint with the device code (Google
    also wants the client secret here, so it goes along when the account has one)."""
    pairs = [("grant_type", DEVICE_GRANT), ("device_code", device_code)]
    pairs += _client_pairs(settings)
    return FormPost(where.token_url, form_encode(pairs), _secrets(settings, device_code))


# --- answers -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True, repr=False)
class Granted:
    """A token response (RFC 6749 5.1): the access token, when it expires (epoch
    seconds; ``now`` when the server gave no ``expires_in``, so it is never cached)
    and a new refresh token when the server rotated it (None: keep the old one)."""

    access_token: str = field(repr=False)
    expires_at: float
    refresh_token: str | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        rotated = "<secret hidden>" if self.refresh_token is not None else None
        return (f"Granted(access_token=<secret hidden>, expires_at={self.expires_at!r}, "
                f"refresh_token={rotated})")

    __str__ = __repr__


@dataclass(frozen=True, slots=True)
class Refused:
    """An error response (RFC 6749 5.2, RFC 8628 3.5): its ``error`` code and its
    ``error_description`` cut to printable ASCII (may be empty)."""

    error: str
    description: str = ""


@dataclass(frozen=True, slots=True, repr=False)
class DeviceAuthorization:
    """RFC 8628 3.2: what to show the user, and the device code to poll with."""

    device_code: str = field(repr=False)
    user_code: str
    verification_uri: str
    verification_uri_complete: str | None
    expires_in: int
    interval: int

    def __repr__(self) -> str:
        return (f"DeviceAuthorization(device_code=<secret hidden>, user_code={self.user_code!r}, "
                f"verification_uri={self.verification_uri!r}, expires_in={self.expires_in!r}, "
                f"interval={self.interval!r})")

    __str__ = __repr__


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not a JSON number")


def _json_object(body: bytes, what: str) -> dict[str, object]:
    """``body`` as a JSON object, or DataError saying what it is instead."""
    if len(body) > MAX_ANSWER_OCTETS:
        raise DataError(f"the {what} is {len(body)} octets long, more than any token response")
    try:
        value = json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise DataError(f"the {what} is not JSON ({type(error).__name__})") from None
    if not isinstance(value, dict):
        raise DataError(f"the {what} is JSON but not an object")
    return value


def _token_text(fields: Mapping[str, object], key: str, what: str) -> str:
    """A token field: visible ASCII only (it goes into an SMTP command and a file line)."""
    value = fields.get(key)
    if (not isinstance(value, str) or not value or len(value) > MAX_TOKEN_CHARS
            or not all(0x21 <= ord(c) <= 0x7E for c in value)):
        raise DataError(f"the {what} has no usable {key}")
    return value


def _seconds(value: object, key: str, what: str) -> int:
    """A JSON number of seconds (an integral float or a digit string also do)."""
    if isinstance(value, bool):
        raise DataError(f"the {what} has a {key} that is not a number of seconds")
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 12:
        value = int(value)
    if isinstance(value, float) and math.isfinite(value) and value == int(value):
        value = int(value)
    if not isinstance(value, int) or not 0 <= value <= MAX_EXPIRES_IN:
        raise DataError(f"the {what} has a {key} that is not a number of seconds")
    return value


def clean_description(text: object) -> str:
    """A server's free text, safe for one log line: printable ASCII, bounded."""
    if not isinstance(text, str):
        return ""
    kept = "".join(c if 0x20 <= ord(c) <= 0x7E else " " for c in text)
    kept = " ".join(kept.split())
    return kept[:DESCRIPTION_CHARS] + ("..." if len(kept) > DESCRIPTION_CHARS else "")


def _refusal(fields: Mapping[str, object], status: int, what: str) -> Refused | None:
    error = fields.get("error")
    if error is None:
        return None
    if (not isinstance(error, str) or not error or len(error) > 100
            or not set(error) <= _ERROR_CODE_CHARS):
        raise DataError(f"the {what} (HTTP {status}) has an error field that is no error code")
    return Refused(error, clean_description(fields.get("error_description")))


def _granted_fields(status: int, body: bytes, what: str) -> Mapping[str, object] | Refused:
    """An endpoint's JSON answer: its ``Refused`` error when it has one, else its fields
    (DataError when it is no JSON object, or not HTTP 200 without an error code)."""
    fields = _json_object(body, what)
    refused = _refusal(fields, status, what)
    if refused is not None:
        return refused
    if status != 200:
        raise DataError(f"the {what} is HTTP {status} without an error code")
    return fields


def parse_token_response(status: int, body: bytes, now: float) -> Granted | Refused:
    """An answer of the token endpoint: ``Granted`` (HTTP 200 with an access token),
    ``Refused`` (an ``error`` field), or DataError for anything else."""
    what = "token endpoint's answer"
    fields = _granted_fields(status, body, what)
    if isinstance(fields, Refused):
        return fields
    access_token = _token_text(fields, "access_token", what)
    token_type = fields.get("token_type", "Bearer")
    if not isinstance(token_type, str) or token_type.lower() != "bearer":
        raise DataError(f"the {what} is not a bearer token")
    expires_in = fields.get("expires_in")
    lifetime = 0 if expires_in is None else _seconds(expires_in, "expires_in", what)
    rotated = None
    if fields.get("refresh_token") is not None:
        rotated = _token_text(fields, "refresh_token", what)
    return Granted(access_token, now + lifetime, rotated)


def _shown_text(fields: Mapping[str, object], key: str, what: str, limit: int) -> str | None:
    value = fields.get(key)
    if value is None:
        return None
    if (not isinstance(value, str) or not value or len(value) > limit
            or not all(0x21 <= ord(c) <= 0x7E for c in value)):
        raise DataError(f"the {what} has a {key} that cannot be shown")
    return value


def _https(value: str | None, key: str, what: str) -> str | None:
    if value is not None and not value.lower().startswith("https://"):
        raise DataError(f"the {what} has a {key} that is not an https:// URL")
    return value


def parse_device_authorization(status: int, body: bytes) -> DeviceAuthorization | Refused:
    """The device authorization response (RFC 8628 3.2; Google spells
    ``verification_url``), ``Refused``, or DataError."""
    what = "device authorization answer"
    fields = _granted_fields(status, body, what)
    if isinstance(fields, Refused):
        return fields
    uri = _https(_shown_text(fields, "verification_uri", what, 2048)
                 or _shown_text(fields, "verification_url", what, 2048), "verification_uri", what)
    user_code = _shown_text(fields, "user_code", what, 64)
    if uri is None or user_code is None:
        raise DataError(f"the {what} lacks the verification URI or the user code")
    interval = fields.get("interval")
    return DeviceAuthorization(
        device_code=_token_text(fields, "device_code", what),
        user_code=user_code,
        verification_uri=uri,
        verification_uri_complete=_https(
            _shown_text(fields, "verification_uri_complete", what, 2048),
            "verification_uri_complete", what),
        expires_in=max(1, _seconds(fields.get("expires_in"), "expires_in", what)),
        interval=DEFAULT_INTERVAL if interval is None else min(
            MAX_INTERVAL, max(1, _seconds(interval, "interval", what))),
    )


# --- what a refusal means ------------------------------------------------------------


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret in it replaced (a server may echo what we sent)."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, "<secret hidden>")
    return text


def login_hint(account: str) -> str:
    """What to do when the refresh token is gone."""
    return f"run `dma oauth2 login {account}` to sign in again, then flush the queue (dma -q)"


def refusal_error(account: str, refused: Refused) -> TempFailure:
    """The deferral for a refused refresh: mail waits while the user fixes the account
    (SPEC 5.6: never bounced for a bad credential)."""
    said = f": {refused.description}" if refused.description else ""
    text = f"account {account}: the token endpoint refused the refresh ({refused.error}{said})"
    if refused.error == "invalid_grant":
        return TempFailure(text, hint=login_hint(account))
    if refused.error in ("invalid_client", "unauthorized_client"):
        return TempFailure(text, hint="check client_id and client_secret in the account")
    if refused.error == "invalid_scope":
        return TempFailure(text, hint="check the account's oauth2 scope")
    return TempFailure(text, hint="check the account's oauth2 settings")


# --- the device flow ---------------------------------------------------------------


@dataclass(frozen=True, slots=True, repr=False)
class Polling:
    """The device flow between polls: the code, the interval, and the deadline."""

    device_code: str = field(repr=False)
    interval: int
    deadline: float

    def __repr__(self) -> str:
        return (f"Polling(device_code=<secret hidden>, interval={self.interval!r}, "
                f"deadline={self.deadline!r})")

    __str__ = __repr__


def start_polling(authorization: DeviceAuthorization, now: float) -> Polling:
    """The first wait, from the authorization received at ``now``."""
    return Polling(authorization.device_code, authorization.interval,
                   now + authorization.expires_in)


def _expired(account: str) -> TempFailure:
    return TempFailure(
        f"account {account}: the code expired before the sign-in was completed",
        hint=f"run `dma oauth2 login {account}` again and enter the new code in time")


def next_poll(
    account: str, polling: Polling, answer: Granted | Refused, now: float
) -> Polling | Granted:
    """After one poll at ``now``: ``Polling`` to wait ``interval`` seconds and ask
    again, ``Granted`` when the user signed in, or our error when it is over."""
    if isinstance(answer, Granted):
        if answer.refresh_token is None:
            raise ConfigError(
                f"account {account}: signed in, but the server gave no refresh token",
                hint="the scope must allow offline use (Microsoft: offline_access)")
        return answer
    if answer.error == "slow_down":
        polling = replace(polling, interval=polling.interval + SLOW_DOWN_STEP)
    elif answer.error == "expired_token":
        raise _expired(account)
    elif answer.error in ("access_denied", "authorization_declined"):
        raise UnavailableError(f"account {account}: the sign-in was declined",
                               hint=f"run `dma oauth2 login {account}` again to retry")
    elif answer.error != "authorization_pending":
        raise _poll_refusal(account, answer)
    if now + polling.interval > polling.deadline:
        raise _expired(account)
    return polling


def _poll_refusal(account: str, refused: Refused) -> DmaError:
    said = f": {refused.description}" if refused.description else ""
    return UnavailableError(
        f"account {account}: the sign-in failed ({refused.error}{said})",
        hint="check client_id, client_secret and the scope of the account")


def device_refusal(settings: OAuth2Settings, where: Endpoints, refused: Refused) -> DmaError:
    """The error for a refused device authorization request, with what to do."""
    said = f": {refused.description}" if refused.description else ""
    text = f"account {settings.account}: the device sign-in was refused ({refused.error}{said})"
    if refused.error == "invalid_scope" and not where.device_scope_allowed:
        return UnavailableError(
            text, hint="Google does not allow the Gmail scope in the device flow: get the "
                       "refresh token another way (see the README's Google section), or use "
                       "token_command or an app password")
    if refused.error in ("invalid_client", "unauthorized_client"):
        return UnavailableError(
            text, hint="check client_id; Microsoft: the app registration must allow "
                       "public client flows")
    return UnavailableError(text, hint="check the account's oauth2 settings")


# --- the access-token cache ------------------------------------------------------------


@dataclass(frozen=True, slots=True, repr=False)
class CachedToken:
    """A cached access token, with the endpoint, client and scope it was issued for
    (a token for other settings is not used)."""

    access_token: str = field(repr=False)
    expires_at: float
    token_url: str
    client_id: str
    scope: str | None

    def __repr__(self) -> str:
        return (f"CachedToken(access_token=<secret hidden>, expires_at={self.expires_at!r}, "
                f"token_url={self.token_url!r}, client_id={self.client_id!r}, "
                f"scope={self.scope!r})")

    __str__ = __repr__


def cache_entry(settings: OAuth2Settings, where: Endpoints, granted: Granted) -> CachedToken:
    """What to cache for a token just granted."""
    return CachedToken(granted.access_token, granted.expires_at, where.token_url,
                       settings.client_id or "", where.scope)


def render_cache(token: CachedToken) -> bytes:
    """The cache file's octets: one JSON object and a newline."""
    return (json.dumps({
        "version": CACHE_VERSION,
        "access_token": token.access_token,
        "expires_at": token.expires_at,
        "token_url": token.token_url,
        "client_id": token.client_id,
        "scope": token.scope,
    }, sort_keys=True) + "\n").encode("ascii")


def parse_cache(text: bytes) -> CachedToken:
    """The cache file back, or DataError (a damaged cache is only a cache miss)."""
    what = "access token cache"
    fields = _json_object(text, what)
    expires_at = fields.get("expires_at")
    token_url, client_id, scope = (fields.get(k) for k in ("token_url", "client_id", "scope"))
    if (fields.get("version") != CACHE_VERSION or isinstance(expires_at, bool)
            or not isinstance(expires_at, (int, float)) or not math.isfinite(expires_at)
            or not isinstance(token_url, str) or not isinstance(client_id, str)
            or not (scope is None or isinstance(scope, str))):
        raise DataError(f"the {what} is not one this version wrote")
    return CachedToken(_token_text(fields, "access_token", what), float(expires_at),
                       token_url, client_id, scope)


def usable(token: CachedToken, settings: OAuth2Settings, where: Endpoints, now: float,
           margin: float = CACHE_MARGIN) -> bool:
    """True when ``token`` was issued for these settings and is good until at least
    ``now + margin``."""
    return (token.token_url == where.token_url and token.client_id == (settings.client_id or "")
            and token.scope == where.scope and now < token.expires_at - margin)
