"""Properties of the ACCOUNTS parser and of route_for (SPEC 2.4): only our error on any
text, never a password in it, and the routing laws."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from dma.core.accounts import AccountsFile, parse_accounts, route_for
from dma.core.errors import ConfigError

FAST = settings(max_examples=300, deadline=None)
PATH = "/etc/dma/accounts.toml"
SECRET = "Zq9-secret-Xk2"

_KEYS = ["host", "port", "tls", "login", "auth", "password", "password_file", "password_command",
         "fingerprint", "verify", "provider", "client_id", "client_secret", "tenant", "scope",
         "token_url", "device_url", "refresh_token_file", "token_command", "prot", "hots",
         '"@example.com"', '"me@example.com"', "x"]
_VALUES = ['"h"', "587", "0", "70000", "true", '"smtps"', '"starttls"', '"none"', '"xoauth2"',
           '"plain"', '"microsoft"', '"google"', '["pass", "show", "x"]', "[]", '"https://x/t"',
           '"http://x"', '"a"', "1.5", "1979-05-27", '{ a = 1 }', '"' + "ab" * 32 + '"',
           f'"{SECRET}"', f'["{SECRET}"]']
_HEADERS = ["[accounts.a]", "[accounts.b]", "[accounts.a.oauth2]", "[routes]", "[accounts]",
            '[accounts."a b"]', "[[accounts]]", "[x]"]

_toml_line = st.one_of(
    st.sampled_from(_HEADERS),
    st.builds(lambda k, v: f"{k} = {v}", st.sampled_from(_KEYS), st.sampled_from(_VALUES)),
    st.text(max_size=12),
)
toml_like = st.lists(_toml_line, max_size=14).map("\n".join)
modes = st.sampled_from([0o600, 0o640, 0o644, 0o660, 0o604, 0o400])


@FAST
@given(st.one_of(st.text(max_size=300), toml_like), modes)
def test_any_text_gives_accounts_or_config_error(text: str, mode: int) -> None:
    """Any text, with any mode, parses to an AccountsFile or raises ConfigError naming the
    file, never another exception; no error shows a password."""
    try:
        result = parse_accounts(text, PATH, mode)
    except ConfigError as error:
        assert error.where is not None and error.where.startswith(PATH)
        assert error.hint
        assert SECRET not in str(error)
        return
    assert isinstance(result, AccountsFile)
    for account in result.accounts.values():
        assert SECRET not in repr(account)
        assert account.host and 1 <= account.port <= 65535


# -- routing laws ----------------------------------------------------------------------------

_names = st.sampled_from(["one", "two", "three"])
_locals = st.sampled_from(["me", "Me", "boss", "x.y"])
_domains = st.sampled_from(["example.com", "example.org", "sub.example.com"])
_route_keys = st.one_of(
    st.builds(lambda local, domain: f"{local}@{domain}", _locals, _domains),
    _domains.map(lambda domain: "@" + domain),
)


def _text(routes: dict[str, str]) -> str:
    blocks = [f'[accounts.{name}]\nhost = "{name}.example.net"\n' for name in ("one", "two",
                                                                               "three")]
    lines = [f"{json.dumps(key)} = {json.dumps(name)}" for key, name in routes.items()]
    return "".join(blocks) + "[routes]\n" + "".join(line + "\n" for line in lines)


def _case(text: str, flips: list[bool]) -> str:
    return "".join(c.upper() if flip else c for c, flip in zip(text, flips + [False] * len(text),
                                                               strict=False))


@FAST
@given(st.dictionaries(_route_keys, _names, max_size=8), _locals, _domains,
       st.lists(st.booleans(), max_size=20))
def test_route_for_laws(routes: dict[str, str], local: str, domain: str,
                        flips: list[bool]) -> None:
    """The exact address (its domain in any case) beats its domain's route; else the
    domain's route (in any case); else None; the null sender always None."""
    parsed = parse_accounts(_text(routes), PATH, 0o600)
    written_domain = _case(domain, flips)
    chosen = route_for(f"{local}@{written_domain}", parsed.routes, parsed.accounts)
    expected = routes.get(f"{local}@{domain}") or routes.get(f"@{domain}")
    assert (chosen.name if chosen else None) == expected
    assert route_for("", parsed.routes, parsed.accounts) is None


@FAST
@given(st.dictionaries(_route_keys, _names, max_size=8), st.text(max_size=30))
def test_route_for_takes_any_sender(routes: dict[str, str], sender: str) -> None:
    """route_for never fails on any sender string: an account of the table or None."""
    parsed = parse_accounts(_text(routes), PATH, 0o600)
    chosen = route_for(sender, parsed.routes, parsed.accounts)
    assert chosen is None or parsed.accounts[chosen.name] is chosen
