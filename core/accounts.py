"""The ACCOUNTS file (TOML) -> ``AccountsFile``; ``route_for`` picks a sender's account (SPEC 2.4).

```toml
[accounts.office]
host = "smtp.office365.com"
port = 587                  # default: 465 with tls = "smtps", else 587
tls = "starttls"            # "smtps", "starttls" (the default), "opportunistic", "none"
login = "alerts@example.com"
auth = "xoauth2"            # optional: force one mechanism (SPEC 5.6)

[accounts.office.oauth2]
provider = "microsoft"
client_id = "..."
refresh_token_file = "office.refresh"   # relative: to the accounts file's directory

[routes]
"@example.com" = "office"
```

An account authenticates with one secret source: ``password``, ``password_file``,
``password_command`` (argv) or an ``oauth2`` table; an account with neither login
nor secret relays without AUTH.  Every mistake is a ConfigError (exit 78) that names
the file (and the line where there is one: tomllib's for a syntax error, else the
account's table or key as the text shows it), the account and the fix.  Values of
``password`` and ``client_secret`` never appear in an error or a repr.

The file's text and its permission bits are arguments: the shell reads them.
``password`` (or ``client_secret``) in a file that others may read is refused
(0600 or 0640, SPEC 2.4), and so is a file that its group or others may write:
whoever writes it chooses the commands dma runs and where the mail goes.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from dma.core.errors import ConfigError, DmaError, SoftwareError, at

TYPE_CHECKING = False
if TYPE_CHECKING:
    from dma.core.transport import Security

TlsMode = Literal["smtps", "starttls", "opportunistic", "none"]
SecretSource = Literal["password", "password_file", "password_command", "oauth2"]

TLS_MODES: tuple[TlsMode, ...] = ("smtps", "starttls", "opportunistic", "none")
"""OAuth2 providers whose endpoints and scopes pydma knows (``provider = ...``)."""

OAUTH2_MECHANISMS = frozenset({"XOAUTH2", "OAUTHBEARER"})
PASSWORD_MECHANISMS = frozenset({"SCRAM-SHA-256", "SCRAM-SHA-1", "CRAM-MD5", "PLAIN", "LOGIN"})
SECRET_SOURCES: tuple[SecretSource, ...] = (
    "password", "password_file", "password_command", "oauth2")
SMTPS_PORT = 465
SUBMISSION_PORT = 587
MAX_NAME = 64
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_FINGERPRINT_DIGITS = 64
_MAX_SHOWN = 40


@dataclass(frozen=True, slots=True)
class OAuth2:
    """An account's ``oauth2`` table: a ``token_command``, or what pydma's own refresh needs."""

    provider: str | None = None
    client_id: str | None = None
    client_secret: str | None = field(default=None, repr=False)  # never in repr or logs
    tenant: str | None = None
    scope: str | None = None
    token_url: str | None = None
    device_url: str | None = None
    refresh_token_file: str | None = None  # absolute
    token_command: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class Account:
    """One ``[accounts.NAME]`` table: where to connect, how to secure it, whom to log in as."""

    name: str
    host: str
    port: int = SUBMISSION_PORT
    tls: TlsMode = "starttls"
    login: str | None = None
    auth: str | None = None  # a forced SASL mechanism, upper case; None: best offered
    password: str | None = field(default=None, repr=False)  # never in repr or logs
    password_file: str | None = None  # absolute
    password_command: tuple[str, ...] | None = None
    oauth2: OAuth2 | None = None
    fingerprint: bytes | None = None  # SHA-256 of the server certificate: a pin
    verify: bool = True

    @property
    def secret_source(self) -> SecretSource | None:
        """Where the account's secret comes from; None for an account without AUTH."""
        for source in SECRET_SOURCES:
            if getattr(self, source) is not None:
                return source
        return None


@dataclass(frozen=True, slots=True)
class Routes:
    """``[routes]``: envelope sender -> account name.

    ``addresses`` keys are ``local@domain`` with the domain in lower case (the local
    part as written); ``domains`` keys are domains in lower case.
    """

    addresses: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    domains: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True, slots=True)
class AccountsFile:
    """The accounts and routes of one ACCOUNTS file."""

    path: str
    accounts: Mapping[str, Account] = field(default_factory=lambda: MappingProxyType({}))
    routes: Routes = field(default_factory=Routes)


def matching_route(sender: str, routes: Routes) -> tuple[str, str] | None:
    """The route that envelope ``sender`` takes: (its key, as ``local@domain`` or
    ``@domain`` with the domain in lower case, and the account name), or None.

    The exact address first (its domain in any case), then ``@domain``; None for
    the null sender and for a sender that no route names.
    """
    local, at_sign, domain = sender.rpartition("@")
    if not at_sign:
        return None
    domain = domain.lower()
    address = f"{local}@{domain}"
    if address in routes.addresses:
        return address, routes.addresses[address]
    if domain in routes.domains:
        return f"@{domain}", routes.domains[domain]
    return None


def route_for(sender: str, routes: Routes, accounts: Mapping[str, Account]) -> Account | None:
    """The account that mail from envelope ``sender`` goes out through (SPEC 2.4).

    As ``matching_route`` says; None is the default route (SMARTHOST, PORT, the TLS
    keys and auth.conf): the null sender and senders that no route names take it.
    """
    route = matching_route(sender, routes)
    if route is None:
        return None
    name = route[1]
    account = accounts.get(name)
    if account is None:
        raise SoftwareError(f"route to account {name!r}, which is not in the table",
                            hint="this is a bug in the caller: use parse_accounts' values")
    return account


def account_security(account: Account) -> Security:
    """How a session with ``account``'s host is secured (SPEC 2.4, 5.5).

    smtps: TLS from the first byte; starttls: STARTTLS required; opportunistic:
    STARTTLS when offered, else plain text, and (as SPEC 5.5 says of
    OPPORTUNISTIC_TLS) not verified unless pinned; none: no TLS.  Mandatory TLS is
    verified against the system CAs (or CAFILE) and the host name unless
    ``verify = false``; a ``fingerprint`` pins the certificate, which replaces them.  dma.conf's
    NOVERIFYCERT and VERIFYCERT are the default route's, not an account's.
    """
    from dma.core.transport import Security

    if account.tls == "none":
        return Security(False, "no", False, None)
    mandatory = account.tls != "opportunistic"
    verify = mandatory and account.verify  # a fingerprint replaces the CA checks (adapters/net)
    starttls: Literal["no", "required", "opportunistic"] = (
        "no" if account.tls == "smtps" else "required" if mandatory else "opportunistic")
    return Security(account.tls == "smtps", starttls, verify, account.fingerprint)


def describe_account(account: Account) -> str:
    """One line for ``-bv`` and logs: where and how the account connects; never a secret."""
    parts = [f"{account.host} port {account.port}", f"tls {account.tls}"]
    if account.fingerprint is not None:
        parts.append("pinned certificate")
    elif not account.verify and account.tls != "none":
        parts.append("certificate not verified")
    if account.login is not None:
        parts.append(f"login {account.login}")
        parts.append(f"secret from {account.secret_source}")
    else:
        parts.append("no AUTH")
    if account.auth is not None:
        parts.append(f"auth {account.auth}")
    return ", ".join(parts)


def parse_accounts(text: str, path: str, mode: int) -> AccountsFile:
    """Read the ACCOUNTS file ``text`` from ``path``, whose permission bits are ``mode``.

    Relative paths in it (``password_file``, ``refresh_token_file``) become relative
    to the directory of ``path``.  Raises ConfigError and nothing else.
    """
    import tomllib

    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise _syntax_error(str(error), path) from None
    except (ValueError, RecursionError) as error:  # an integer over 4300 digits, deep nesting
        problem = "nested too deeply" if isinstance(error, RecursionError) else "a number too long"
        raise ConfigError(f"not valid TOML: {problem}", where=path,
                          hint="fix the file: see the accounts example in the README") from None
    reader = _Reader(path, _Locator(path, text))
    result = reader.document(document)
    _check_mode(result, mode, reader)
    return result


# -- the reader ------------------------------------------------------------------------


class _Locator:
    """Best-effort line numbers for tables and keys, as the text shows them."""

    def __init__(self, path: str, text: str) -> None:
        self.path = path
        self.lines = text.split("\n")

    def where(self, table: tuple[str, ...], key: str | None = None) -> str:
        """``path:line`` of ``key`` in the ``[table]`` header's section (of the header
        itself when the key is None or not found), or ``path`` alone."""
        header = "[" + ".".join(table) + "]"
        start = next((n for n, line in enumerate(self.lines) if _bare(line) == header), None)
        if start is None:
            return self.path
        if key is not None:
            for number in range(start + 1, len(self.lines)):
                line = _bare(self.lines[number])
                if line.startswith("["):
                    break
                if line.startswith(key + "="):
                    return at(self.path, number + 1)
        return at(self.path, start + 1)


def _bare(line: str) -> str:
    """A line without blanks, quotes and comment, for matching headers and keys."""
    return re.sub(r"[\s\"']", "", line.split("#", 1)[0])


_ACCOUNT_KEYS = ("host", "port", "tls", "login", "auth", "password", "password_file",
                 "password_command", "oauth2", "fingerprint", "verify")
_OAUTH2_KEYS = ("provider", "client_id", "client_secret", "tenant", "scope", "token_url",
                "device_url", "refresh_token_file", "token_command")
_SECRET_KEYS = frozenset({"password", "client_secret"})
_REFRESH_KEYS = ("provider", "client_id", "client_secret", "tenant", "scope", "token_url",
                 "device_url", "refresh_token_file")
_HINT = "see the accounts example in the README"


@dataclass(frozen=True, slots=True)
class _Reader:
    path: str
    locator: _Locator

    @property
    def base(self) -> str:
        return posixpath.dirname(self.path) or "."

    def fail(self, table: tuple[str, ...], key: str | None, message: str, hint: str) -> ConfigError:
        return ConfigError(message, where=self.locator.where(table, key), hint=hint)

    def document(self, document: dict[str, Any]) -> AccountsFile:
        _unknown_keys(self, (), document, ("accounts", "routes"), "")
        accounts_table = self.table(document.get("accounts", {}), (), "accounts", "accounts")
        accounts: dict[str, Account] = {}
        for name, value in accounts_table.items():
            accounts[name] = self.account(name, value)
        routes = self.routes(self.table(document.get("routes", {}), (), "routes", "routes"),
                             accounts)
        return AccountsFile(self.path, MappingProxyType(accounts), routes)

    def table(self, value: object, parent: tuple[str, ...], key: str, what: str
              ) -> dict[str, Any]:
        """``value`` when it is a table (``key`` of ``parent``), else a ConfigError."""
        if not isinstance(value, dict):
            raise self.fail(parent, key, f"{what} must be a table, not {_type_name(value)}",
                            f"write it as [{'.'.join((*parent, key))}]")
        return value

    # -- one account

    def account(self, name: str, value: object) -> Account:
        table = ("accounts", name)
        if not _NAME.fullmatch(name) or len(name) > MAX_NAME:
            raise self.fail(("accounts",), None, f"account name {_shown(name)} is not allowed",
                            f"name accounts with letters, digits, '.', '_' and '-' (at most"
                            f" {MAX_NAME}), starting with a letter or digit")
        about = f"account {name!r}"
        body = self.table(value, ("accounts",), name, about)
        _unknown_keys(self, table, body, _ACCOUNT_KEYS, about)
        fields: dict[str, Any] = {}
        for key, raw in body.items():
            fields[key] = _ACCOUNT_READERS[key](self, table, key, raw, about)
        if "host" not in fields:
            raise self.fail(table, None, f"{about} has no host",
                            'add host = "smtp.example.com" (the smarthost to send through)')
        tls = fields.setdefault("tls", "starttls")
        fields.setdefault("port", SMTPS_PORT if tls == "smtps" else SUBMISSION_PORT)
        account = Account(name=name, **fields)
        _check_account(self, account, table, about)
        return account

    # -- routes

    def routes(self, body: dict[str, Any], accounts: Mapping[str, Account]) -> Routes:
        addresses: dict[str, str] = {}
        domains: dict[str, str] = {}
        table = ("routes",)
        for sender, name in body.items():
            about = f"route {sender!r}"
            if not isinstance(name, str):
                raise self.fail(table, sender, f"{about} must name an account (a string), not"
                                f" {_type_name(name)}", f'write "{sender}" = "<account name>"')
            if name not in accounts:
                raise self.fail(table, sender, f"{about} names account {_shown(name)}, which"
                                " is not defined", _closest(name, list(accounts))
                                or f"add [accounts.{name}] or fix the name")
            key, is_address = self.route_key(sender, about)
            into = addresses if is_address else domains
            if key in into:
                raise self.fail(table, sender, f"{about} repeats the route for {key!r} (domains"
                                " match in any case)", "keep one of the two lines")
            into[key] = name
        return Routes(MappingProxyType(addresses), MappingProxyType(domains))

    def route_key(self, sender: str, about: str) -> tuple[str, bool]:
        """The route's lookup key (the domain in lower case) and whether it is an address."""
        from dma.core.addresses import parse_envelope_address

        local, at_sign, domain = sender.rpartition("@")
        try:
            if not at_sign:
                raise ConfigError("it is neither an address nor @domain")
            parse_envelope_address(f"{local or 'postmaster'}@{domain}")
        except DmaError as error:
            raise self.fail(("routes",), sender, f"{about} is not an envelope sender:"
                            f" {error.message}", 'write "user@example.com" or "@example.com"'
                            ) from None
        if local:
            return f"{local}@{domain.lower()}", True
        return domain.lower(), False

    # -- the oauth2 table

    def oauth2(self, table: tuple[str, ...], key: str, value: object, about: str) -> OAuth2:
        inner = (*table, key)
        body = self.table(value, table, key, f"{about}'s {key}")
        _unknown_keys(self, inner, body, _OAUTH2_KEYS, f"{about}'s {key}")
        fields: dict[str, Any] = {}
        for name, raw in body.items():
            fields[name] = _OAUTH2_READERS[name](self, inner, name, raw, about)
        oauth2 = OAuth2(**fields)
        _check_oauth2(self, oauth2, inner, about)
        return oauth2


# -- values ------------------------------------------------------------------------------

_Read = Callable[[_Reader, tuple[str, ...], str, Any, str], Any]


def _string(reader: _Reader, table: tuple[str, ...], key: str, value: object, about: str) -> str:
    if not isinstance(value, str):
        raise reader.fail(table, key, f"{about}: {key} must be a string, not {_type_name(value)}",
                          f'write {key} = "..."')
    if not value or "\0" in value or (key not in _SECRET_KEYS and _has_control(value)):
        raise reader.fail(table, key, f"{about}: {key} is empty or holds control characters",
                          f"give {key} a value on one line")
    return value


def _secret(reader: _Reader, table: tuple[str, ...], key: str, value: object, about: str) -> str:
    """A password or client secret: any characters but NUL; never shown."""
    return _string(reader, table, key, value, about)


def _host(reader: _Reader, table: tuple[str, ...], key: str, value: object, about: str) -> str:
    host = _string(reader, table, key, value, about)
    if any(char.isspace() or char in "/@[]" for char in host):
        raise reader.fail(table, key, f"{about}: host {_shown(host)} is not a host name",
                          'write the host name alone, e.g. host = "smtp.example.com"')
    return host


def _path(reader: _Reader, table: tuple[str, ...], key: str, value: object, about: str) -> str:
    path = _string(reader, table, key, value, about)
    return posixpath.normpath(posixpath.join(reader.base, path))


def _port(reader: _Reader, table: tuple[str, ...], key: str, value: object, about: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 65535:
        return value
    raise reader.fail(table, key, f"{about}: port must be a number from 1 to 65535, not"
                      f" {value if type(value) is int else _type_name(value)}",
                      "write e.g. port = 587 for starttls or port = 465 for smtps")


def _tls(reader: _Reader, table: tuple[str, ...], key: str, value: object, about: str) -> str:
    return _choice(reader, table, key, value, about, TLS_MODES)


def _provider(reader: _Reader, table: tuple[str, ...], key: str, value: object,
              about: str) -> str:
    from dma.core.oauth2 import PROVIDERS  # the presets themselves: one list of names

    return _choice(reader, table, key, value, about, tuple(PROVIDERS),
                   otherwise="; or leave provider out and give token_url and device_url")


def _choice(reader: _Reader, table: tuple[str, ...], key: str, value: object, about: str,
            choices: tuple[str, ...], otherwise: str = "") -> str:
    text = _string(reader, table, key, value, about)
    if text.lower() in choices:
        return text.lower()
    known = ", ".join(f'"{choice}"' for choice in choices)
    raise reader.fail(table, key, f"{about}: {key} {_shown(text)} is not one of {known}",
                      (_closest(text, list(choices)) or f"write one of {known}") + otherwise)


def _mechanism(reader: _Reader, table: tuple[str, ...], key: str, value: object,
               about: str) -> str:
    text = _string(reader, table, key, value, about).upper()
    known = sorted(OAUTH2_MECHANISMS | PASSWORD_MECHANISMS)
    if text in known:
        return text
    raise reader.fail(table, key, f"{about}: auth {_shown(text.lower())} is not a mechanism"
                      " pydma speaks", (_closest(text, known) or "write one of "
                      + ", ".join(name.lower() for name in known)) + ", or leave auth out"
                      " to use the best one the server offers")


def _argv(reader: _Reader, table: tuple[str, ...], key: str, value: object,
          about: str) -> tuple[str, ...]:
    if (not isinstance(value, list) or not value
            or not all(isinstance(word, str) and "\0" not in word for word in value)
            or not value[0]):
        raise reader.fail(table, key, f"{about}: {key} must be a non-empty array of strings"
                          " (a program and its arguments; no shell runs it)",
                          f'write e.g. {key} = ["pass", "show", "mail/example"]')
    return tuple(value)


def _boolean(reader: _Reader, table: tuple[str, ...], key: str, value: object,
             about: str) -> bool:
    if isinstance(value, bool):
        return value
    raise reader.fail(table, key, f"{about}: {key} must be true or false, not"
                      f" {_type_name(value)}", f"write {key} = false (without quotes)")


def _fingerprint(reader: _Reader, table: tuple[str, ...], key: str, value: object,
                 about: str) -> bytes:
    digits = _string(reader, table, key, value, about).replace(":", "")
    if len(digits) == _FINGERPRINT_DIGITS and re.fullmatch(r"[0-9a-fA-F]+", digits):
        return bytes.fromhex(digits)
    raise reader.fail(table, key, f"{about}: fingerprint must be a SHA-256: 64 hex digits"
                      " (colons allowed)", "get it with: openssl x509 -noout -fingerprint"
                      " -sha256 -in cert.pem")


def _url(reader: _Reader, table: tuple[str, ...], key: str, value: object, about: str) -> str:
    url = _string(reader, table, key, value, about)
    if url.lower().startswith("https://") and len(url) > len("https://") and " " not in url:
        return url
    raise reader.fail(table, key, f"{about}: {key} must be an https:// URL",
                      "tokens travel only over verified HTTPS")


def _oauth2(reader: _Reader, table: tuple[str, ...], key: str, value: object,
            about: str) -> OAuth2:
    return reader.oauth2(table, key, value, about)


_ACCOUNT_READERS: Mapping[str, _Read] = MappingProxyType({
    "host": _host, "port": _port, "tls": _tls, "login": _string, "auth": _mechanism,
    "password": _secret, "password_file": _path, "password_command": _argv,
    "oauth2": _oauth2, "fingerprint": _fingerprint, "verify": _boolean,
})
_OAUTH2_READERS: Mapping[str, _Read] = MappingProxyType({
    "provider": _provider, "client_id": _string, "client_secret": _secret, "tenant": _string,
    "scope": _string, "token_url": _url, "device_url": _url, "refresh_token_file": _path,
    "token_command": _argv,
})


# -- whole-table checks ----------------------------------------------------------------------


def _check_account(reader: _Reader, account: Account, table: tuple[str, ...],
                   about: str) -> None:
    sources = [source for source in SECRET_SOURCES if getattr(account, source) is not None]
    if len(sources) > 1:
        raise reader.fail(table, sources[1], f"{about} has {len(sources)} secret sources: "
                          + " and ".join(sources), "keep one of them")
    if account.login is None and (sources or account.auth is not None):
        raise reader.fail(table, sources[0] if sources else "auth",
                          f"{about} has a secret or auth but no login",
                          'add login = "you@example.com" (the name the smarthost knows you by)')
    if account.login is not None and not sources:
        raise reader.fail(table, "login", f"{about} has a login but no secret",
                          'add password_command = ["pass", "show", "mail/account"],'
                          " password_file, an oauth2 table, or password")
    _check_mechanism(reader, account, table, about)
    if account.tls == "none":
        for key, set_ in (("fingerprint", account.fingerprint is not None),
                          ("verify", not account.verify)):
            if set_:
                raise reader.fail(table, key, f"{about} sets {key} but tls = \"none\": there"
                                  " is no certificate to check", f"set tls, or remove {key}")


def _check_mechanism(reader: _Reader, account: Account, table: tuple[str, ...],
                     about: str) -> None:
    if account.auth is None:
        return
    oauth2 = account.oauth2 is not None
    if (account.auth in OAUTH2_MECHANISMS) != oauth2:
        needs = "an oauth2 table" if not oauth2 else "a password, not an oauth2 token"
        raise reader.fail(table, "auth", f"{about}: auth {account.auth.lower()} needs {needs}",
                          "choose a mechanism for the secret the account has, or leave auth out")


def _check_oauth2(reader: _Reader, oauth2: OAuth2, table: tuple[str, ...], about: str) -> None:
    refresh = [key for key in _REFRESH_KEYS if getattr(oauth2, key) is not None]
    if oauth2.token_command is not None:
        if refresh:
            raise reader.fail(table, refresh[0], f"{about}: token_command and pydma's own"
                              f" refresh ({', '.join(refresh)}) are two token sources",
                              "keep token_command alone, or remove it")
        return
    missing = [key for key in ("client_id", "refresh_token_file") if getattr(oauth2, key) is None]
    if oauth2.provider is None and oauth2.token_url is None:
        missing.insert(0, "provider (or token_url)")
    if missing:
        raise reader.fail(table, None, f"{about}'s oauth2 table lacks {', '.join(missing)}",
                          "pydma's own refresh needs provider or token_url, client_id and"
                          " refresh_token_file; or give token_command alone")
    if oauth2.tenant is not None and oauth2.provider != "microsoft":
        raise reader.fail(table, "tenant", f"{about}: tenant is for provider = \"microsoft\" only",
                          "remove tenant, or set provider = \"microsoft\"")


def _check_mode(result: AccountsFile, mode: int, reader: _Reader) -> None:
    """Refuse a file others may write, and secrets in a file others may read."""
    if mode & 0o022:
        raise ConfigError(f"the accounts file may be written by {_writers(mode)} (mode"
                          f" {mode & 0o7777:04o}): whoever writes it chooses the commands dma"
                          " runs and where mail goes", where=reader.path,
                          hint=f"chmod 600 {reader.path}, or 640 for a group that only reads it")
    if not mode & 0o007:
        return
    for account in result.accounts.values():
        key = ("password" if account.password is not None else
               "client_secret" if account.oauth2 and account.oauth2.client_secret else None)
        if key is not None:
            table = ("accounts", account.name) + (("oauth2",) if key == "client_secret" else ())
            raise reader.fail(table, key, f"account {account.name!r} keeps its {key} in a file"
                              f" that everyone may read (mode {mode & 0o7777:04o})",
                              f"chmod 600 {reader.path} or 640, or move the secret to"
                              " password_command or password_file")


def _writers(mode: int) -> str:
    return "its group and others" if mode & 0o022 == 0o022 else (
        "its group" if mode & 0o020 else "others")


# -- helpers -----------------------------------------------------------------------------


def _syntax_error(text: str, path: str) -> ConfigError:
    """tomllib's message, with its line as our ``where`` (its column stays in the message)."""
    match = re.search(r"\s*\(at line (\d+), column (\d+)\)$", text)
    if match is None:
        message = re.sub(r"\s*\(at end of document\)$", "", text)
        return ConfigError(f"not valid TOML at the end of the file: {message}", where=path,
                           hint=_HINT)
    return ConfigError(f"not valid TOML: {text[:match.start()]} (column {match.group(2)})",
                       where=at(path, int(match.group(1))), hint=_HINT)


def _unknown_keys(reader: _Reader, table: tuple[str, ...], body: dict[str, Any],
                  known: tuple[str, ...], about: str) -> None:
    for key in body:
        if key not in known:
            place = f"{about}: " if about else ""
            raise reader.fail(table, key, f"{place}unknown key {_shown(key)}",
                              _closest(key, list(known)) or "known keys: " + ", ".join(known))


def _closest(word: str, known: list[str]) -> str | None:
    import difflib

    close = difflib.get_close_matches(word, known, n=1)
    return f"did you mean {close[0]}?" if close else None


def _type_name(value: object) -> str:
    for kind, name in ((bool, "a boolean"), (int, "an integer"), (float, "a float"),
                       (str, "a string"), (list, "an array"), (dict, "a table")):
        if isinstance(value, kind):
            return name
    return "a date or time"


def _has_control(text: str) -> bool:
    return any(ord(char) < 0x20 or ord(char) == 0x7F for char in text)


def _shown(text: str) -> str:
    """Quote ``text`` for an error message, cut short so junk stays readable."""
    if len(text) > _MAX_SHOWN:
        text = text[:_MAX_SHOWN] + "..."
    return repr(text)
