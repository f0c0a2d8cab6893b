"""dma.conf text -> ``Config`` (SPEC 2.1).

Every file the C dma accepts means the same here (``#`` cuts a line anywhere, the
key ends at the first blank, the last string wins, booleans only turn on).  The
differences are on purpose and all make mistakes visible instead of silent:
leading and trailing blanks and a trailing CR are ignored, a boolean given a value
is an error, an unknown key names the closest known one, FINGERPRINT, VERIFYCERT,
STARTTLS or OPPORTUNISTIC_TLS without SECURETRANSFER is an error (the C dma ignores
them and sends in plain text), and values are checked here rather than failing
later at delivery time.

The file's text is an argument: the shell reads it (and the MAILNAME file).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType

from dma.core.errors import ConfigError, DmaError, at
from dma.core.values import frozen, replace

# typing, re, durations, difflib and ipaddress are imported only where needed: dma.conf
# is read on every submission, whose start-up time matters (issues 2 and 11).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Literal

    Kind = Literal[
        "string", "path", "bool", "port", "count", "duration", "fingerprint", "nameserver",
        "mailname", "masquerade", "ignored",
    ]


@frozen
class Config:
    """The settings of dma.conf; field defaults are the C dma's (or ours for new keys)."""

    smarthost: str | None = None
    port: int = 25
    aliases: str = "/etc/aliases"
    spooldir: str = "/var/spool/dma"
    authpath: str | None = None
    certfile: str | None = None
    cafile: str | None = None
    mailname: str | None = None  # a name, or an absolute path (the shell reads it)
    masquerade: str | None = None
    fingerprint: bytes | None = None  # 32 bytes of SHA-256
    securetransfer: bool = False
    starttls: bool = False
    opportunistic_tls: bool = False
    verifycert: bool = False
    noverifycert: bool = False
    insecure: bool = False
    defer: bool = False
    fullbounce: bool = False
    nullclient: bool = False
    localonly: bool = False
    maildir: str = "/var/mail"
    nameserver: str | None = None  # "addr" or "addr:port" or "[v6]:port"
    maxconnections: int = 4
    queuelifetime: int = 5 * 86400  # seconds
    timeout: int = 300  # seconds to wait for each SMTP reply (RFC 5321: 5 minutes)
    accounts: str | None = None  # the ACCOUNTS file (TOML): smarthost accounts, routes


@frozen
class KeySpec:
    """One dma.conf key: how its value is read, which field it sets, and its doc line."""

    name: str
    kind: Kind
    field: str | None  # the Config field it sets; None for a key that changes nothing
    default: str  # the default as the README table shows it
    doc: str


MAX_CONNECTIONS = 1000  # well under the usual 1024 open files limit
FINGERPRINT_HEX_DIGITS = 64
DEFAULT_DNS_PORT = 53
_BLANKS = " \t"
_MAX_SHOWN = 40

_SPECS = (
    KeySpec("SMARTHOST", "string", "smarthost", "unset",
            "relay every remote message through this host (no MX lookup)"),
    KeySpec("PORT", "port", "port", "25",
            "TCP port for every remote delivery, smarthost or MX"),
    KeySpec("ALIASES", "path", "aliases", "/etc/aliases", "the aliases file"),
    KeySpec("SPOOLDIR", "path", "spooldir", "/var/spool/dma", "the queue directory"),
    KeySpec("AUTHPATH", "path", "authpath", "unset",
            "auth.conf with the SMTP AUTH logins (login|host:password)"),
    KeySpec("CERTFILE", "path", "certfile", "unset",
            "PEM file holding the client certificate chain and its private key"),
    KeySpec("CAFILE", "path", "cafile", "unset",
            "CA bundle to verify servers with (default: the system's)"),
    KeySpec("MAILNAME", "mailname", "mailname", "unset",
            "this host's mail name, or an absolute path to a regular file whose first line is it"),
    KeySpec("MASQUERADE", "masquerade", "masquerade", "unset",
            "rewrite the envelope sender: user@, host, @host or user@host"),
    KeySpec("FINGERPRINT", "fingerprint", "fingerprint", "unset",
            "with SECURETRANSFER, pin the server certificate: its SHA-256 (64 hex digits, colons"
            " allowed)"),
    KeySpec("SECURETRANSFER", "bool", "securetransfer", "off",
            "use TLS: on connect, or with STARTTLS if that is set too"),
    KeySpec("SECURETRANS", "bool", "securetransfer", "off",
            "the manual's spelling of SECURETRANSFER"),
    KeySpec("STARTTLS", "bool", "starttls", "off",
            "with SECURETRANSFER, start TLS with STARTTLS instead of on connect"),
    KeySpec("OPPORTUNISTIC_TLS", "bool", "opportunistic_tls", "off",
            "with SECURETRANSFER, carry on without TLS when the server offers no STARTTLS"),
    KeySpec("VERIFYCERT", "bool", "verifycert", "off",
            "with SECURETRANSFER, verify the server certificate and host name"),
    KeySpec("NOVERIFYCERT", "bool", "noverifycert", "off",
            "do not verify server certificates (the C dma's old default)"),
    KeySpec("INSECURE", "bool", "insecure", "off",
            "allow plain-text AUTH LOGIN without TLS"),
    KeySpec("SECURE", "ignored", None, "-",
            "the manual's placeholder for the default: accepted, changes nothing"),
    KeySpec("DEFER", "bool", "defer", "off",
            "only queue messages; deliver them on the next queue run (dma -q)"),
    KeySpec("FULLBOUNCE", "bool", "fullbounce", "off",
            "bounces carry the whole message, not only its headers"),
    KeySpec("NULLCLIENT", "bool", "nullclient", "off",
            "send every recipient to SMARTHOST; no aliases, no local delivery"),
    KeySpec("LOCALONLY", "bool", "localonly", "off",
            "never deliver remotely: remote recipients bounce"),
    KeySpec("MAILDIR", "path", "maildir", "/var/mail", "the mailbox directory"),
    KeySpec("NAMESERVER", "nameserver", "nameserver", "system resolver",
            "DNS server to ask instead of the system's: addr, addr:port or [v6]:port"),
    KeySpec("MAXCONNECTIONS", "count", "maxconnections", "4",
            "concurrent outgoing SMTP connections in all, across every dma process of the"
            f" spool, and to one next hop (1-{MAX_CONNECTIONS}); lower it for a smarthost"
            " that limits sessions (Exchange Online allows 3)"),
    KeySpec("QUEUELIFETIME", "duration", "queuelifetime", "5d",
            "how long a message may stay queued before it bounces (5d, 120h, seconds)"),
    KeySpec("TIMEOUT", "duration", "timeout", "5m",
            "how long to wait for each SMTP reply (twice that for the final dot) and for a"
            " free connection slot; connecting waits at most 30s"),
    KeySpec("ACCOUNTS", "path", "accounts", "unset",
            "TOML file of smarthost accounts (OAuth2, password commands) and the senders that"
            " use them; unmatched senders take the default route"),
)

KEYS: Mapping[str, KeySpec] = MappingProxyType({spec.name: spec for spec in _SPECS})


_DEFAULTS = Config()


def parse_config(text: str, path: str, defaults: Config = _DEFAULTS) -> Config:
    """Return ``defaults`` changed by the dma.conf ``text`` read from ``path``.

    Raises ConfigError naming ``path:line`` (or ``path`` for whole-file checks).
    """
    changes: dict[str, Any] = {}
    first_lines: dict[str, int] = {}  # field -> the first line that sets it
    for number, line in _meaningful_lines(text, path):
        where = at(path, number)
        key, value = _split(line)
        spec = KEYS.get(key)
        if spec is None:
            raise _unknown_key(key, where)
        if spec.kind == "ignored":
            if value:
                raise _value_given(key, value, where)
            continue
        assert spec.field is not None
        first_lines.setdefault(spec.field, number)
        if spec.kind == "bool":
            if value:
                raise _value_given(key, value, where)
            changes[spec.field] = True
            continue
        if not value:
            raise ConfigError(
                f"{key} needs a value",
                where=where,
                hint=f"write '{key} <value>' or remove the line",
            )
        changes[spec.field] = _VALUE_READERS[spec.kind](key, value, where)
    config = replace(defaults, **changes)
    _check_tls(config, path, first_lines)
    _check_whole(config, path)
    return config


def key_line(text: str, path: str, field: str) -> str:
    """``path:line`` of the line of a parsed dma.conf ``text`` that set Config ``field``
    (the last one: the one that counts), or ``path`` when no line sets it.

    For errors found after parsing, such as a MAILNAME file that cannot be used.
    """
    found: int | None = None
    for number, line in _meaningful_lines(text, path):
        spec = KEYS.get(_split(line)[0])
        if spec is not None and spec.field == field:
            found = number
    return path if found is None else at(path, found)


def render_config(config: Config) -> str:
    """Write ``config`` as dma.conf text with only its non-default keys.

    ``parse_config(render_config(c), p) == c`` for every valid ``c``; a Config that
    no dma.conf can express raises ConfigError instead of writing a file that lies.
    """
    default = Config()
    lines: list[str] = []
    seen: set[str] = set()
    for spec in _SPECS:
        if spec.field is None or spec.field in seen:
            continue
        seen.add(spec.field)
        value = getattr(config, spec.field)
        if value == getattr(default, spec.field):
            continue
        if spec.kind == "bool":
            lines.append(spec.name)
        else:
            lines.append(f"{spec.name} {_render_value(spec, value)}")
    text = "".join(line + "\n" for line in lines)
    try:
        again = parse_config(text, "<rendered>")
    except ConfigError as error:
        raise ConfigError(
            f"this configuration cannot be written as dma.conf: {error.message}",
            hint=error.hint,
        ) from None
    if again != config:
        raise ConfigError(
            "this configuration cannot be written as dma.conf: it does not read back the same",
            hint="string values must not be empty, hold '#' or line breaks, or start or end blank",
        )
    return text


def mailname_from_file(first_line: str) -> str | None:
    """Return the mail name in a MAILNAME file's first line, as the C dma reads it.

    The name ends at the first character that is not an ASCII letter or digit,
    ``_``, ``.`` or ``-``; None when nothing is left (the caller falls back to the
    system host name).
    """
    end = next((i for i, char in enumerate(first_line) if char not in _HOSTNAME_CHARS),
               len(first_line))
    return first_line[:end] or None


def nameserver_address(config: Config) -> tuple[str, int] | None:
    """Return NAMESERVER as ``(address, port)``, port 53 unless given; None when unset."""
    if config.nameserver is None:
        return None
    return _parse_nameserver(config.nameserver, "NAMESERVER")


# -- reading lines -------------------------------------------------------------------

_HOSTNAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")


def _meaningful_lines(text: str, path: str) -> Iterator[tuple[int, str]]:
    """Yield (line number, line) without comment, CR and edge blanks; skip empty ones."""
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw[:-1] if raw.endswith("\r") else raw
        if "\0" in line:
            raise ConfigError(
                "the line holds a NUL character",
                where=at(path, number),
                hint="dma.conf is a text file: remove the NUL bytes",
            )
        line = line.split("#", 1)[0].strip(_BLANKS)
        if line:
            yield number, line


def _split(line: str) -> tuple[str, str]:
    """Split at the first run of blanks: the key before it, the value after."""
    end = next((i for i, char in enumerate(line) if char in _BLANKS), len(line))
    return line[:end], line[end:].lstrip(_BLANKS)


# -- errors --------------------------------------------------------------------------


def _shown(text: str) -> str:
    """Quote ``text`` for an error message, cut short so a junk line stays readable."""
    if len(text) > _MAX_SHOWN:
        text = text[:_MAX_SHOWN] + "..."
    return repr(text)


def _unknown_key(key: str, where: str) -> ConfigError:
    upper = key.upper()
    if upper in KEYS:
        hint = f"keys are case-sensitive: write {upper}"
    else:
        import difflib

        close = difflib.get_close_matches(upper, list(KEYS), n=1)
        hint = (
            f"did you mean {close[0]}?"
            if close
            else "see the configuration table in the README for the known keys"
        )
    return ConfigError(f"unknown key {_shown(key)}", where=where, hint=hint)


def _value_given(key: str, value: str, where: str) -> ConfigError:
    return ConfigError(
        f"{key} takes no value, got {_shown(value)}",
        where=where,
        hint=f"remove the value: '{key}' alone turns it on",
    )


# -- values --------------------------------------------------------------------------

_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


def _number(text: str) -> int | None:
    """The value of 1 to 10 ASCII digits, else None."""
    return int(text) if 1 <= len(text) <= 10 and text.isascii() and text.isdigit() else None


def _read_string(key: str, value: str, where: str) -> str:
    return value


def _domain_problem(domain: str) -> str | None:
    """Why ``domain`` cannot follow the ``@`` of an address, or None when it can."""
    from dma.core.addresses import parse_envelope_address

    try:
        parse_envelope_address(f"postmaster@{domain}")
    except DmaError as error:
        return error.message.split(": ", 1)[-1]  # the problem, not the made-up address
    return None


def _read_mailname(key: str, value: str, where: str) -> str:
    """A domain name (or address literal), or an absolute path to a file holding one.

    A fully qualified name's trailing dot (``mail.example.com.``) is dropped: it has
    no place after the ``@`` of an address.
    """
    if value.startswith("/"):
        return value
    name = value[:-1] if value.endswith(".") and not value.endswith("..") else value
    problem = _domain_problem(name)
    if problem is None:
        return name
    raise ConfigError(
        f"{key} {_shown(value)} is not a mail domain name ({problem})",
        where=where,
        hint="write the host's mail name, e.g. mail.example.org, or an absolute path"
        " to a file whose first line is it",
    )


def _read_masquerade(key: str, value: str, where: str) -> str:
    """``user@``, ``host``, ``@host`` or ``user@host``, each part valid in an address."""
    from dma.core.addresses import parse_envelope_address

    user, at_sign, domain = value.rpartition("@")
    if not at_sign:
        user, domain = "", value
    try:
        if not user and not domain:
            raise ConfigError(f"{key} {_shown(value)} names neither a user nor a host")
        parse_envelope_address(f"{user or 'postmaster'}@{domain or 'example.org'}")
    except DmaError as error:
        raise ConfigError(
            f"{key} {_shown(value)} cannot rewrite a sender: {error.message.split(': ', 1)[-1]}",
            where=where,
            hint="write user@, host, @host or user@host",
        ) from None
    return value


def _read_port(key: str, value: str, where: str) -> int:
    number = _number(value)
    if number is not None and 1 <= number <= 65535:
        return number
    raise ConfigError(
        f"{key} must be a port number from 1 to 65535, got {_shown(value)}",
        where=where,
        hint="write e.g. 25, 465 or 587",
    )


def _read_count(key: str, value: str, where: str) -> int:
    number = _number(value)
    if number is not None and 1 <= number <= MAX_CONNECTIONS:
        return number
    raise ConfigError(
        f"{key} must be a whole number from 1 to {MAX_CONNECTIONS}, got {_shown(value)}",
        where=where,
        hint="write e.g. 4",
    )


def _read_duration(key: str, value: str, where: str) -> int:
    from dma.core.durations import parse_duration

    try:
        return parse_duration(value)
    except DmaError as error:
        raise ConfigError(f"{key}: {error.message}", where=where, hint=error.hint) from None
    except ValueError:  # more digits than int() converts
        raise ConfigError(
            f"{key}: duration {_shown(value)} is too long", where=where, hint="write e.g. 5d"
        ) from None


def _read_fingerprint(key: str, value: str, where: str) -> bytes:
    digits = value.replace(":", "")
    if not _HEX_DIGITS.issuperset(digits):
        raise ConfigError(
            f"{key} holds characters that are not hex digits: {_shown(value)}",
            where=where,
            hint="write the SHA-256 of the certificate as 64 hex digits, colons allowed",
        )
    if len(digits) != FINGERPRINT_HEX_DIGITS:
        raise ConfigError(
            f"{key} has {len(digits)} hex digits, a SHA-256 fingerprint has 64",
            where=where,
            hint="get it with: openssl x509 -noout -fingerprint -sha256 -in cert.pem",
        )
    return bytes.fromhex(digits)


def _read_nameserver(key: str, value: str, where: str) -> str:
    _parse_nameserver(value, key, where)
    return value


def _parse_nameserver(value: str, key: str, where: str | None = None) -> tuple[str, int]:
    """Split ``addr``, ``addr:port``, ``[v6]`` or ``[v6]:port`` into (address, port)."""
    host, port_text = value, ""
    if value.startswith("["):
        host, bracket, rest = value[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise _bad_nameserver(key, value, where)
        port_text = rest[1:] if rest else ""
        if rest and not port_text:
            raise _bad_nameserver(key, value, where)
        if not _is_ip(host, 6):
            raise _bad_nameserver(key, value, where)
    elif not _is_ip(value, 0):
        host, colon, port_text = value.rpartition(":")
        if not colon or not _is_ip(host, 4) or not port_text:
            raise _bad_nameserver(key, value, where)
    port = DEFAULT_DNS_PORT
    if port_text:
        number = _number(port_text)
        if number is None or not 1 <= number <= 65535:
            raise _bad_nameserver(key, value, where)
        port = number
    import ipaddress

    return str(ipaddress.ip_address(host)), port


def _is_ip(text: str, version: int) -> bool:
    """True when ``text`` is an IP address (of ``version`` 4 or 6; 0 for either)."""
    import ipaddress

    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    return version in (0, address.version)


def _bad_nameserver(key: str, value: str, where: str | None) -> ConfigError:
    return ConfigError(
        f"{key} must be an IP address with an optional port, got {_shown(value)}",
        where=where,
        hint="write e.g. 127.0.0.1, 127.0.0.1:5353, ::1 or [::1]:5353",
    )


_VALUE_READERS: Mapping[str, Callable[[str, str, str], object]] = MappingProxyType(
    {
        "string": _read_string,
        "path": _read_string,
        "port": _read_port,
        "count": _read_count,
        "duration": _read_duration,
        "fingerprint": _read_fingerprint,
        "nameserver": _read_nameserver,
        "mailname": _read_mailname,
        "masquerade": _read_masquerade,
    }
)


def _render_value(spec: KeySpec, value: object) -> str:
    if spec.kind == "fingerprint":
        assert isinstance(value, bytes)
        return value.hex()
    if spec.kind == "duration":
        from dma.core.durations import format_duration

        assert isinstance(value, int)
        return format_duration(value)
    return str(value)


# -- whole-file checks ---------------------------------------------------------------

# Keys that check or shape a TLS session that only SECURETRANSFER starts (SPEC 2.1).
_NEEDS_SECURETRANSFER = (
    ("fingerprint", "FINGERPRINT"),
    ("verifycert", "VERIFYCERT"),
    ("starttls", "STARTTLS"),
    ("opportunistic_tls", "OPPORTUNISTIC_TLS"),
)


def _check_tls(config: Config, path: str, first_lines: Mapping[str, int]) -> None:
    """Refuse TLS keys without SECURETRANSFER: ignoring them would send in plain text.

    The error is at the first offending line (at ``path`` when only the defaults set
    one) and names every offending key.
    """
    if config.securetransfer:
        return
    offending = [
        (first_lines.get(field), key)
        for field, key in _NEEDS_SECURETRANSFER
        if getattr(config, field) not in (None, False)
    ]
    if not offending:
        return
    in_file = [number for number, _ in offending if number is not None]
    ordered = sorted(offending, key=lambda pair: (pair[0] is None, pair[0] or 0))
    names = ", ".join(key for _, key in ordered)
    verb = "is" if len(ordered) == 1 else "are"
    raise ConfigError(
        f"{names} {verb} set but SECURETRANSFER is not: no TLS would be started, so mail"
        " (and any login) would go out in plain text",
        where=at(path, min(in_file)) if in_file else path,
        hint=f"add SECURETRANSFER to use TLS, or remove {names}",
    )



def _check_whole(config: Config, path: str) -> None:
    if config.nullclient and not config.smarthost:
        raise ConfigError(
            "NULLCLIENT is set but SMARTHOST is not",
            where=path,
            hint="a null client sends everything to SMARTHOST: set it, or remove NULLCLIENT",
        )
    if config.nullclient and config.localonly:
        raise ConfigError(
            "NULLCLIENT and LOCALONLY are both set",
            where=path,
            hint="NULLCLIENT sends all mail away, LOCALONLY keeps it here: remove one",
        )
