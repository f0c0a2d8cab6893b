"""Properties of the dma.conf and auth.conf parsers: only our error, exact round trips."""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st

from dma.core.authconf import AuthEntry, AuthTable, lookup, parse_auth, render_auth
from dma.core.config import KEYS, Config, parse_config, render_config
from dma.core.errors import ConfigError

FAST = settings(max_examples=200, deadline=None)

_key_words = st.sampled_from([*KEYS, "smarthost", "PROT", "#", ""])
_value_words = st.sampled_from(
    ["", "x", "25", "0", "70000", "5d", "::1", "[::1]:53", "1.2.3.4:5", "a" * 64, "#c", "yes"]
)
_blanks = st.sampled_from(["", " ", "\t", "  ", " \t "])
_line_ends = st.sampled_from(["\n", "\r\n", "\r", ""])

config_like_line = st.builds(
    lambda lead, key, sep, value, trail, end: lead + key + sep + value + trail + end,
    _blanks,
    _key_words,
    _blanks,
    st.one_of(_value_words, st.text(max_size=20)),
    _blanks,
    _line_ends,
)
config_like_text = st.lists(config_like_line, max_size=8).map("".join)


@FAST
@given(st.one_of(st.text(max_size=200), config_like_text))
def test_any_text_gives_config_or_config_error(text: str) -> None:
    """Any text parses to a Config or raises ConfigError with a where, never anything else."""
    try:
        config = parse_config(text, "dma.conf")
    except ConfigError as error:
        assert error.where is not None and error.where.startswith("dma.conf")
        assert error.hint
    else:
        assert isinstance(config, Config)


_plain = st.text(
    alphabet=st.characters(
        codec="utf-8", exclude_characters="#\n\r\0"
    ),
    min_size=1,
    max_size=20,
).map(lambda s: s.strip(" \t")).filter(bool)


def _nameserver() -> st.SearchStrategy[str]:
    v4 = st.ip_addresses(v=4).map(str)
    v6 = st.ip_addresses(v=6).map(str)
    port = st.integers(1, 65535)
    return st.one_of(
        v4,
        v6,
        st.builds(lambda a, p: f"{a}:{p}", v4, port),
        st.builds(lambda a, p: f"[{a}]:{p}", v6, port),
        v6.map(lambda a: f"[{a}]"),
    )


_label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)
_domain = st.lists(_label, min_size=1, max_size=4).map(".".join)
_user = st.from_regex(r"[a-z0-9][a-z0-9._+-]{0,10}", fullmatch=True).filter(
    lambda u: ".." not in u and not u.endswith(".")
)
_mailname = st.one_of(_domain, _plain.map(lambda p: "/" + p.lstrip("/")))
_masquerade = st.one_of(
    _domain,
    _domain.map(lambda d: "@" + d),
    _user.map(lambda u: u + "@"),
    st.builds(lambda u, d: f"{u}@{d}", _user, _domain),
)


@st.composite
def configs(draw: st.DrawFn) -> Config:
    optional = st.one_of(st.none(), _plain)
    config = Config(
        smarthost=draw(optional),
        port=draw(st.integers(1, 65535)),
        aliases=draw(_plain),
        spooldir=draw(_plain),
        authpath=draw(optional),
        certfile=draw(optional),
        cafile=draw(optional),
        mailname=draw(st.one_of(st.none(), _mailname)),
        masquerade=draw(st.one_of(st.none(), _masquerade)),
        fingerprint=draw(st.one_of(st.none(), st.binary(min_size=32, max_size=32))),
        securetransfer=draw(st.booleans()),
        starttls=draw(st.booleans()),
        opportunistic_tls=draw(st.booleans()),
        verifycert=draw(st.booleans()),
        noverifycert=draw(st.booleans()),
        insecure=draw(st.booleans()),
        defer=draw(st.booleans()),
        fullbounce=draw(st.booleans()),
        nullclient=False,
        localonly=draw(st.booleans()),
        maildir=draw(_plain),
        nameserver=draw(st.one_of(st.none(), _nameserver())),
        maxconnections=draw(st.integers(1, 1000)),
        queuelifetime=draw(st.integers(1, 10**9)),
        timeout=draw(st.integers(1, 10**6)),
    )
    if config.smarthost and not config.localonly and draw(st.booleans()):
        config = dataclasses.replace(config, nullclient=True)
    if not config.securetransfer:  # SPEC 2.1: these four need SECURETRANSFER
        config = dataclasses.replace(config, **_NO_TLS_KEYS)
    return config


_NO_TLS_KEYS: dict[str, object] = {
    "fingerprint": None, "verifycert": False, "starttls": False, "opportunistic_tls": False
}
_TLS_LINES = {
    "FINGERPRINT": "FINGERPRINT " + "ab" * 32,
    "VERIFYCERT": "VERIFYCERT",
    "STARTTLS": "STARTTLS",
    "OPPORTUNISTIC_TLS": "OPPORTUNISTIC_TLS",
}
_OTHER_LINES = st.sampled_from(
    ["DEFER", "SMARTHOST relay", "CAFILE /ca.pem", "NOVERIFYCERT", "INSECURE", "# note", ""]
)


@FAST
@given(
    st.lists(st.one_of(st.sampled_from(sorted(_TLS_LINES)), _OTHER_LINES), max_size=8),
    st.sampled_from(["", "SECURETRANSFER", "SECURETRANS"]),
    st.integers(0, 8),
)
def test_tls_keys_need_securetransfer(lines: list[str], secure: str, position: int) -> None:
    """A file with FINGERPRINT, VERIFYCERT, STARTTLS or OPPORTUNISTIC_TLS parses only with
    SECURETRANSFER somewhere in it; without, the error is at the first such line."""
    written = [_TLS_LINES.get(line, line) for line in lines]
    if secure:
        written.insert(min(position, len(written)), secure)
    text = "".join(line + "\n" for line in written)
    tls_at = [number for number, line in enumerate(lines, start=1) if line in _TLS_LINES]
    if secure or not tls_at:
        config = parse_config(text, "dma.conf")
        assert config.securetransfer == bool(secure)
        return
    try:
        parse_config(text, "dma.conf")
    except ConfigError as error:
        assert error.where == f"dma.conf:{tls_at[0]}"
        assert error.hint is not None and "add SECURETRANSFER" in error.hint
    else:
        raise AssertionError("TLS keys without SECURETRANSFER parsed")


@FAST
@given(configs(), st.sampled_from(sorted(_NO_TLS_KEYS)))
def test_render_refuses_tls_keys_without_securetransfer(config: Config, field: str) -> None:
    """A Config with a TLS key set but SECURETRANSFER off cannot be written as dma.conf."""
    value = bytes(32) if field == "fingerprint" else True
    broken = dataclasses.replace(config, securetransfer=False, **{field: value})
    try:
        render_config(broken)
    except ConfigError as error:
        assert "cannot be written" in error.message and "SECURETRANSFER" in error.message
    else:
        raise AssertionError("render_config wrote TLS keys without SECURETRANSFER")


@FAST
@given(configs())
def test_config_round_trip(config: Config) -> None:
    """Rendering a valid Config and parsing it back gives the same Config."""
    assert parse_config(render_config(config), "dma.conf") == config


@FAST
@given(configs())
def test_render_writes_only_changed_keys(config: Config) -> None:
    """The rendered file has exactly one line per field that differs from the default."""
    changed = sum(
        getattr(config, f.name) != getattr(Config(), f.name) for f in dataclasses.fields(Config)
    )
    assert render_config(config).count("\n") == changed


_login = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="|\n\0"),
    max_size=15,
).filter(lambda s: not s.startswith("#"))
_host = st.text(
    alphabet=st.characters(
        codec="utf-8", exclude_characters=":| \t\n\0"
    ),
    max_size=15,
)
_password = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="\n\0"),
    min_size=4,
    max_size=20,
).filter(lambda s: not s.endswith("\r"))
entries = st.builds(AuthEntry, login=_login, host=_host, password=_password)


@FAST
@given(st.lists(entries, max_size=6).map(tuple))
def test_auth_round_trip(items: tuple[AuthEntry, ...]) -> None:
    """Rendering an AuthTable and parsing it back gives the same table."""
    table = AuthTable(items)
    assert parse_auth(render_auth(table), "auth.conf") == table


_letters_host = st.text(alphabet="abcABC", min_size=1, max_size=3)


@FAST
@given(
    st.lists(st.builds(AuthEntry, login=_login, host=_letters_host, password=_password),
             max_size=8),
    _letters_host,
)
def test_auth_lookup_finds_last(items: list[AuthEntry], host: str) -> None:
    """lookup returns the last entry whose host equals the query ignoring case, else None."""
    matching = [e for e in items if e.host.lower() == host.lower()]
    assert lookup(AuthTable(tuple(items)), host) == (matching[-1] if matching else None)


@FAST
@given(st.text(max_size=200))
def test_any_text_gives_table_or_config_error(text: str) -> None:
    """Any text parses to an AuthTable or raises ConfigError naming path:line."""
    try:
        table = parse_auth(text, "auth.conf")
    except ConfigError as error:
        assert error.where is not None and error.where.startswith("auth.conf:")
    else:
        assert isinstance(table, AuthTable)


_secret = _password.map(lambda s: "\u00a7" + s)  # the marker is in no login or host
_no_marker = st.text(alphabet="abc.@-", max_size=8)


@FAST
@given(st.lists(st.builds(AuthEntry, login=_no_marker, host=_no_marker, password=_secret),
                min_size=1, max_size=4))
def test_password_never_in_repr(items: list[AuthEntry]) -> None:
    """No entry's or table's repr or str shows a password, raw or quoted."""
    table = AuthTable(tuple(items))
    shown = repr(table) + str(table) + "".join(repr(e) + str(e) for e in items)
    for entry in items:
        assert entry.password not in shown
        assert repr(entry.password)[1:-1] not in shown


@FAST
@given(_secret.map(lambda s: s.translate(str.maketrans("", "", ":| \t\r"))),
       st.sampled_from(["user host:{}", "user{}", "user|host{}", "u|h:ok\nuser{}\n"]))
def test_password_never_in_error(secret: str, template: str) -> None:
    """A line that does not parse gives an error whose text does not hold its password."""
    try:
        parse_auth(template.format(secret), "auth.conf")
    except ConfigError as error:
        assert secret not in str(error)
        assert error.where is not None and error.where.startswith("auth.conf:")
    else:
        raise AssertionError("a line without separators parsed")
