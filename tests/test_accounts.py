"""The ACCOUNTS file (SPEC 2.4): parsing, every error (file, line, account, fix), routes per
sender, and loading it through shell/settings from real files."""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import DmaSite

from dma.core import sysexits
from dma.core.accounts import (
    Account,
    AccountsFile,
    OAuth2,
    account_security,
    describe_account,
    parse_accounts,
    route_for,
)
from dma.core.config import KEYS, Config, parse_config
from dma.core.errors import ConfigError, SoftwareError
from dma.core.transport import Security
from dma.shell.settings import ACCOUNTS_READ_LIMIT, load_accounts, load_settings

PATH = "/etc/dma/accounts.toml"
SECRET = "hunter2-Sekr1t"
SHA = "0123456789abcdef" * 4

SPEC_EXAMPLE = """\
[accounts.office]
host = "smtp.office365.com"
port = 587
tls = "starttls"            # "smtps", "starttls", "opportunistic", "none"
login = "alerts@example.com"
auth = "xoauth2"            # or "oauthbearer", "scram-sha-256", "plain", ...

[accounts.office.oauth2]
provider = "microsoft"
client_id = "..."
tenant = "organizations"
refresh_token_file = "/var/lib/dma/office.refresh"

[accounts.fastmail]
host = "smtp.fastmail.com"
port = 465
tls = "smtps"
login = "me@fastmail.com"
password_command = ["pass", "show", "mail/fastmail"]

[routes]                    # envelope sender (address or @domain) -> account
"@example.com" = "office"
"me@fastmail.com" = "fastmail"
"""


def parse(text: str, mode: int = 0o600) -> AccountsFile:
    return parse_accounts(text, PATH, mode)


def error_of(text: str, mode: int = 0o600) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        parse(text, mode)
    assert caught.value.exit_code == sysexits.EX_CONFIG
    assert caught.value.where is not None and caught.value.where.startswith(PATH)
    assert caught.value.hint
    return caught.value


def account(body: str, name: str = "a") -> str:
    """An accounts file with one account ``name`` holding ``body``."""
    return f"[accounts.{name}]\n{body}"


PASSWORD_ACCOUNT = 'host = "smtp.example.net"\nlogin = "me@example.net"\npassword_file = "pw"\n'


# -- what the file means ---------------------------------------------------------------


def test_spec_example_reads_as_written() -> None:
    """SPEC 2.4's example gives two accounts with their hosts, TLS, logins, sources and routes."""
    result = parse(SPEC_EXAMPLE)
    office, fastmail = result.accounts["office"], result.accounts["fastmail"]
    assert office == Account(
        name="office", host="smtp.office365.com", port=587, tls="starttls",
        login="alerts@example.com", auth="XOAUTH2",
        oauth2=OAuth2(provider="microsoft", client_id="...", tenant="organizations",
                      refresh_token_file="/var/lib/dma/office.refresh"))
    assert office.secret_source == "oauth2"
    assert fastmail.password_command == ("pass", "show", "mail/fastmail")
    assert (fastmail.port, fastmail.tls, fastmail.secret_source) == (465, "smtps",
                                                                     "password_command")
    assert dict(result.routes.domains) == {"example.com": "office"}
    assert dict(result.routes.addresses) == {"me@fastmail.com": "fastmail"}


def test_empty_file_has_no_accounts_and_no_routes() -> None:
    """An empty accounts file is valid: every sender takes the default route."""
    result = parse("")
    assert result == AccountsFile(PATH)
    assert route_for("a@example.com", result.routes, result.accounts) is None


@pytest.mark.parametrize(("tls", "port"), [("smtps", 465), ("starttls", 587),
                                           ("opportunistic", 587), ("none", 587)])
def test_port_defaults_to_the_tls_mode_s(tls: str, port: int) -> None:
    """Without port, smtps uses 465 and the other modes the submission port 587."""
    assert parse(account(f'host = "h"\ntls = "{tls}"\n')).accounts["a"].port == port


def test_defaults_are_starttls_verified_without_auth() -> None:
    """An account with only a host uses STARTTLS, verifies the certificate and has no AUTH."""
    only = parse(account('host = "relay.example.net"\n')).accounts["a"]
    assert (only.tls, only.port, only.verify, only.login, only.secret_source) == (
        "starttls", 587, True, None, None)


def test_relative_paths_are_relative_to_the_accounts_file() -> None:
    """password_file and refresh_token_file that are relative name files beside the accounts
    file, never in the working directory; absolute ones stay."""
    result = parse(account(PASSWORD_ACCOUNT)
                   + account('host = "h"\nlogin = "l"\n[accounts.b.oauth2]\nprovider = "google"\n'
                             'client_id = "c"\nrefresh_token_file = "../b.refresh"\n', "b"))
    assert result.accounts["a"].password_file == "/etc/dma/pw"
    oauth2 = result.accounts["b"].oauth2
    assert oauth2 is not None and oauth2.refresh_token_file == "/etc/b.refresh"


def test_fingerprint_and_verify() -> None:
    """fingerprint reads as 32 octets (colons allowed, any case); verify = false is kept."""
    colons = ":".join(SHA[i:i + 2].upper() for i in range(0, 64, 2))
    pinned = parse(account(f'host = "h"\nfingerprint = "{colons}"\n')).accounts["a"]
    assert pinned.fingerprint == bytes.fromhex(SHA)
    assert parse(account('host = "h"\nverify = false\n')).accounts["a"].verify is False


def test_tls_and_provider_in_any_case() -> None:
    """tls and provider values are read in any case."""
    text = account('host = "h"\ntls = "SMTPS"\nlogin = "l"\n[accounts.a.oauth2]\n'
                   'provider = "Google"\nclient_id = "c"\nrefresh_token_file = "r"\n')
    only = parse(text).accounts["a"]
    assert only.tls == "smtps" and only.oauth2 is not None and only.oauth2.provider == "google"


def test_auth_mechanism_is_upper_case() -> None:
    """auth is read in any case and kept in upper case, as the SASL code names mechanisms."""
    result = parse(account(PASSWORD_ACCOUNT + 'auth = "Scram-SHA-256"\n'))
    assert result.accounts["a"].auth == "SCRAM-SHA-256"


def test_token_command_alone_is_an_oauth2_source() -> None:
    """An oauth2 table with only token_command is complete."""
    result = parse(account('host = "h"\nlogin = "l"\n[accounts.a.oauth2]\n'
                           'token_command = ["oauth2-helper", "--account", "a"]\n'))
    oauth2 = result.accounts["a"].oauth2
    assert oauth2 == OAuth2(token_command=("oauth2-helper", "--account", "a"))


def test_explicit_endpoints_instead_of_a_provider() -> None:
    """token_url (https) with client_id and refresh_token_file stands in for a provider."""
    result = parse(account('host = "h"\nlogin = "l"\n[accounts.a.oauth2]\n'
                           'token_url = "https://id.example.org/token"\n'
                           'device_url = "https://id.example.org/device"\n'
                           'client_id = "c"\nclient_secret = "s"\nscope = "smtp"\n'
                           'refresh_token_file = "/r"\n'))
    oauth2 = result.accounts["a"].oauth2
    assert oauth2 is not None and oauth2.token_url == "https://id.example.org/token"


# -- routes ---------------------------------------------------------------------------------

ROUTED = (account('host = "one.example"\n', "one") + account('host = "two.example"\n', "two")
          + '[routes]\n"@example.com" = "one"\n"Boss@Example.com" = "two"\n')


def _routed(sender: str) -> str | None:
    result = parse(ROUTED)
    chosen = route_for(sender, result.routes, result.accounts)
    return None if chosen is None else chosen.name


def test_exact_address_beats_its_domain() -> None:
    """A sender named exactly takes its own account, not its domain's."""
    assert _routed("Boss@Example.com") == "two"
    assert _routed("other@example.com") == "one"


def test_domains_match_in_any_case_local_parts_exactly() -> None:
    """The domain of a sender matches in any case; the local part as written."""
    assert _routed("Boss@EXAMPLE.COM") == "two"
    assert _routed("boss@example.com") == "one"  # another mailbox, its domain's route
    assert _routed("x@Example.Com") == "one"


def test_null_unmatched_and_bare_senders_take_the_default_route() -> None:
    """The null sender, a sender of another domain (a subdomain too) and a bare name: None."""
    for sender in ("", "x@example.org", "x@sub.example.com", "example.com", "example.com@"):
        assert _routed(sender) is None, sender


def test_route_to_an_account_missing_from_the_table_is_a_bug() -> None:
    """route_for on values that parse_accounts would not make says so (SoftwareError)."""
    result = parse(ROUTED)
    with pytest.raises(SoftwareError):
        route_for("x@example.com", result.routes, {})


# -- errors: file, line, account, fix ----------------------------------------------------------


def test_toml_syntax_error_names_the_line() -> None:
    """A TOML syntax error gives tomllib's line as path:line and its column in the message."""
    error = error_of('[accounts.a]\nhost = "h"\nport = = 5\n')
    assert error.where == f"{PATH}:3"
    assert "not valid TOML" in error.message and "column" in error.message


def test_toml_error_at_the_end_names_the_file() -> None:
    """An unclosed table header at the end of the file names the file."""
    assert "end of the file" in error_of('[accounts.a]\nhost = "h"\n[x').message


@pytest.mark.parametrize("text", ["a = " + "1" * 5000, "a = " + "[" * 5000 + "]" * 5000])
def test_what_tomllib_cannot_read_is_a_config_error(text: str) -> None:
    """A number over Python's digit limit or nesting past the recursion limit is a
    ConfigError, not a ValueError or RecursionError."""
    assert "not valid TOML" in error_of(text).message


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ('acounts = 1\n', None, ["unknown key 'acounts'", "did you mean accounts?"]),
        (account('host = "h"\nprot = 25\n'), 3, ["account 'a'", "'prot'", "did you mean port?"]),
        (account('host = "h"\nlogin = "l"\n[accounts.a.oauth2]\nprovder = "google"\n'), 5,
         ["account 'a'", "'provder'", "did you mean provider?"]),
    ],
)
def test_unknown_keys_name_the_closest_known_key(text: str, line: int | None,
                                                 words: list[str]) -> None:
    """An unknown key, at the top, in an account or in its oauth2 table, names the closest
    known key, the account and (where the text shows it) the line."""
    error = error_of(text)
    assert error.where == (PATH if line is None else f"{PATH}:{line}")
    for word in words:
        assert word in str(error)


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ('host = "h"\nport = "587"\n', ["port must be a number", "not a string"]),
        ('host = "h"\nport = 0\n', ["port must be a number from 1 to 65535, not 0"]),
        ('host = "h"\nport = 70000\n', ["not 70000"]),
        ('host = "h"\nport = true\n', ["not a boolean"]),
        ('host = 5\n', ["host must be a string, not an integer"]),
        ('host = "smtp example"\n', ["is not a host name"]),
        ('host = "h"\nverify = "no"\n', ["verify must be true or false"]),
        ('host = "h"\nlogin = "l"\npassword_command = "pass show x"\n',
         ["password_command must be a non-empty array of strings", "no shell"]),
        ('host = "h"\nlogin = "l"\npassword_command = []\n', ["non-empty array"]),
        ('host = "h"\nlogin = "l"\npassword_command = ["", "x"]\n', ["non-empty array"]),
        ('host = "h"\nlogin = "l"\npassword_command = ["pass", 1]\n', ["non-empty array"]),
        ('host = "h"\ntls = "ssl"\n', ["tls 'ssl' is not one of", '"smtps"']),
        ('host = "h"\ntls = "startls"\n', ["did you mean starttls?"]),
        ('host = "h"\nlogin = "l"\npassword_file = "p"\nauth = "digest-md5"\n',
         ["auth 'digest-md5' is not a mechanism"]),
        ('host = "h"\nfingerprint = "abcd"\n', ["64 hex digits"]),
        ('host = "h"\nlogin = "l\\nx"\npassword_file = "p"\n', ["control characters"]),
        ('port = 25\n', ["has no host"]),
        ('host = "h"\ntls = "none"\nfingerprint = "' + SHA + '"\n', ['tls = "none"']),
        ('host = "h"\ntls = "none"\nverify = false\n', ["no certificate to check"]),
    ],
)
def test_account_value_errors(body: str, words: list[str]) -> None:
    """Wrong types, ports, TLS modes, mechanisms and commands are errors naming the account
    and saying what to write."""
    error = error_of(account(body))
    assert "account 'a'" in error.message
    for word in words:
        assert word in str(error)


def test_value_errors_name_the_key_s_line() -> None:
    """An error about one key is at that key's line in the account's table."""
    text = account('host = "h"\n\nport = 99999\n', "first") + account('port = 1\n', "second")
    assert error_of(text).where == f"{PATH}:4"
    assert error_of(account('host = "h"\n', "first") + account('port = 1\n', "second")).where \
        == f"{PATH}:3"


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ('host = "h"\nlogin = "l"\npassword_file = "p"\npassword_command = ["x"]\n',
         ["2 secret sources: password_file and password_command", "keep one"]),
        ('host = "h"\nlogin = "l"\n', ["has a login but no secret", "password_command"]),
        ('host = "h"\npassword_file = "p"\n', ["has a secret or auth but no login"]),
        ('host = "h"\nauth = "plain"\n', ["no login"]),
        ('host = "h"\nlogin = "l"\npassword_file = "p"\nauth = "xoauth2"\n',
         ["auth xoauth2 needs an oauth2 table"]),
        ('host = "h"\nlogin = "l"\nauth = "plain"\n[accounts.a.oauth2]\ntoken_command = ["t"]\n',
         ["auth plain needs a password"]),
    ],
)
def test_secret_sources_one_and_only_one(body: str, words: list[str]) -> None:
    """An account has exactly one secret source when it logs in, none when it does not, and
    a forced mechanism fits its source."""
    error = error_of(account(body))
    for word in words:
        assert word in str(error)


@pytest.mark.parametrize(
    ("oauth2", "words"),
    [
        ('provider = "yahoo"\nclient_id = "c"\nrefresh_token_file = "r"\n',
         ["provider 'yahoo' is not one of", "token_url"]),
        ('provider = "google"\nrefresh_token_file = "r"\n', ["lacks client_id"]),
        ('client_id = "c"\nrefresh_token_file = "r"\n', ["lacks provider (or token_url)"]),
        ('provider = "google"\nclient_id = "c"\n', ["lacks refresh_token_file"]),
        ('provider = "google"\nclient_id = "c"\nrefresh_token_file = "r"\ntenant = "t"\n',
         ['tenant is for provider = "microsoft" only']),
        ('token_command = ["t"]\nprovider = "google"\n', ["two token sources", "provider"]),
        ('token_url = "http://id.example.org/token"\nclient_id = "c"\nrefresh_token_file = "r"\n',
         ["token_url must be an https:// URL"]),
    ],
)
def test_oauth2_table_errors(oauth2: str, words: list[str]) -> None:
    """The oauth2 table needs a token_command alone, or a known provider (or token_url),
    client_id and refresh_token_file; tenant is Microsoft's; URLs are https."""
    error = error_of(account(f'host = "h"\nlogin = "l"\n[accounts.a.oauth2]\n{oauth2}'))
    assert "account 'a'" in error.message
    for word in words:
        assert word in str(error)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('[routes]\n"@example.com" = "nobody"\n', ["names account 'nobody'", "not defined"]),
        (account('host = "h"\n', "office") + '[routes]\n"@example.com" = "ofice"\n',
         ["did you mean office?"]),
        (account('host = "h"\n') + '[routes]\n"example.com" = "a"\n',
         ["is not an envelope sender", "@example.com"]),
        (account('host = "h"\n') + '[routes]\n"me@" = "a"\n', ["is not an envelope sender"]),
        (account('host = "h"\n') + '[routes]\n"@exa mple.com" = "a"\n',
         ["is not an envelope sender"]),
        (account('host = "h"\n') + '[routes]\n"@example.com" = 1\n', ["must name an account"]),
        (account('host = "h"\n') + '[routes]\n"@example.com" = "a"\n"@EXAMPLE.com" = "a"\n',
         ["repeats the route for 'example.com'"]),
        ('routes = 5\n', ["routes must be a table"]),
        ('[accounts]\na = 5\n', ["account 'a' must be a table"]),
        ('[accounts."a b"]\nhost = "h"\n', ["account name 'a b' is not allowed"]),
    ],
)
def test_route_and_table_errors(text: str, words: list[str]) -> None:
    """Routes name defined accounts (the closest name suggested), keys are addresses or
    @domain, each once; tables are tables; account names are safe words."""
    error = error_of(text)
    for word in words:
        assert word in str(error)


def test_route_error_names_its_line() -> None:
    """A route to an unknown account is at the route's line."""
    text = account('host = "h"\n') + '\n[routes]\n"@a.example" = "a"\n"@b.example" = "b"\n'
    assert error_of(text).where == f"{PATH}:6"


# -- permissions and secrets ----------------------------------------------------------------


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o100600, 0o400])
def test_password_in_a_private_file_is_accepted(mode: int) -> None:
    """password is allowed in a file of mode 0600 or 0640 (or stricter)."""
    text = account(f'host = "h"\nlogin = "l"\npassword = "{SECRET}"\n')
    assert parse(text, mode).accounts["a"].password == SECRET


@pytest.mark.parametrize("mode", [0o644, 0o604, 0o601])
def test_password_in_a_file_others_may_read_is_refused(mode: int) -> None:
    """password in a file that others may read is an error at its line, with the fix; the
    password is not in it."""
    error = error_of(account(f'host = "h"\nlogin = "l"\npassword = "{SECRET}"\n'), mode)
    assert error.where == f"{PATH}:4"
    assert "account 'a' keeps its password" in error.message and "chmod 600" in str(error)
    assert SECRET not in str(error)


def test_client_secret_in_a_file_others_may_read_is_refused() -> None:
    """An oauth2 client_secret counts as a secret for the file's mode too."""
    text = account('host = "h"\nlogin = "l"\n[accounts.a.oauth2]\nprovider = "google"\n'
                   f'client_id = "c"\nclient_secret = "{SECRET}"\nrefresh_token_file = "r"\n')
    error = error_of(text, 0o644)
    assert "client_secret" in error.message and SECRET not in str(error)


def test_no_secret_in_the_file_may_be_world_readable() -> None:
    """A file without password or client_secret may be 0644."""
    assert parse(SPEC_EXAMPLE, 0o644).accounts["fastmail"].host == "smtp.fastmail.com"


@pytest.mark.parametrize(("mode", "who"), [(0o620, "its group"), (0o602, "others"),
                                           (0o666, "its group and others")])
def test_a_file_others_may_write_is_refused(mode: int, who: str) -> None:
    """A file its group or others may write is refused: they would choose the commands."""
    error = error_of(SPEC_EXAMPLE, mode)
    assert f"may be written by {who}" in error.message and error.where == PATH


@pytest.mark.parametrize(
    "body",
    [
        f'host = "h"\nlogin = "l"\npassword = "{SECRET}"\npassword_file = "p"\n',
        f'host = "h"\npassword = "{SECRET}"\n',
        f'host = "h"\nlogin = "l"\npassword = "{SECRET}"\nauth = "xoauth2"\n',
        f'host = "h"\nlogin = "l"\npassword = "{SECRET}"\nprot = 1\n',
        f'host = "h"\nlogin = "l"\npassword = "{SECRET}\\u0000"\n',
        f'host = "h"\nlogin = "l"\npassword = ["{SECRET}"]\n',
        f'host = "h"\nlogin = "l"\npassword = "{SECRET}"\ntls = "none"\nverify = false\n',
    ],
)
def test_errors_never_show_a_password(body: str) -> None:
    """Whatever is wrong with an account, its password is in neither the message nor the
    hint."""
    error = error_of(account(body))
    assert SECRET not in str(error) and SECRET not in repr(error)


def test_repr_and_description_hide_secrets() -> None:
    """An account's repr, its oauth2 table's repr and describe_account never show a secret."""
    text = (account(f'host = "h"\nlogin = "l"\npassword = "{SECRET}"\n')
            + account(f'host = "h"\nlogin = "l"\n[accounts.b.oauth2]\nprovider = "google"\n'
                      f'client_id = "c"\nclient_secret = "{SECRET}"\nrefresh_token_file = "r"\n',
                      "b"))
    result = parse(text)
    shown = repr(result) + "".join(describe_account(a) for a in result.accounts.values())
    assert SECRET not in shown


def test_describe_account() -> None:
    """describe_account says host, port, TLS, login, secret source and forced mechanism."""
    office = parse(SPEC_EXAMPLE).accounts["office"]
    assert describe_account(office) == (
        "smtp.office365.com port 587, tls starttls, login alerts@example.com, secret from"
        " oauth2, auth XOAUTH2")
    relay = parse(account('host = "r"\ntls = "smtps"\nverify = false\n')).accounts["a"]
    assert describe_account(relay) == "r port 465, tls smtps, certificate not verified, no AUTH"


# -- the ACCOUNTS key and loading the file ----------------------------------------------------


def test_accounts_key_sets_the_path() -> None:
    """ACCOUNTS in dma.conf sets Config.accounts; unset by default."""
    assert Config().accounts is None
    config = parse_config("ACCOUNTS /etc/dma/accounts.toml\n", "/etc/dma/dma.conf")
    assert config.accounts == "/etc/dma/accounts.toml"
    assert KEYS["ACCOUNTS"].kind == "path"


def _site_with_accounts(site: DmaSite, text: str | bytes, *, mode: int = 0o600,
                        name: str = "accounts.toml") -> Path:
    path = site.root / name
    if isinstance(text, str):
        text = text.encode()
    path.write_bytes(text)
    path.chmod(mode)
    site.write_config(f"ACCOUNTS {name}\n")
    return path


def _load(site: DmaSite) -> AccountsFile | None:
    return load_accounts(load_settings(str(site.config), dict(site.environ)))


def test_load_accounts_relative_to_dma_conf(site: DmaSite) -> None:
    """A relative ACCOUNTS path is relative to dma.conf's directory, and the file's relative
    paths to its own."""
    path = _site_with_accounts(site, account(PASSWORD_ACCOUNT))
    loaded = _load(site)
    assert loaded is not None and loaded.path == str(path)
    assert loaded.accounts["a"].password_file == str(site.root / "pw")


def test_load_accounts_unset_is_none(site: DmaSite) -> None:
    """Without ACCOUNTS there is nothing to load."""
    assert _load(site) is None


def _load_error(site: DmaSite) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        _load(site)
    return caught.value


def test_load_accounts_missing_file_is_a_config_error(site: DmaSite) -> None:
    """ACCOUNTS naming a file that does not exist is a ConfigError saying to create it."""
    site.write_config("ACCOUNTS nowhere.toml\n")
    error = _load_error(site)
    assert error.where == str(site.root / "nowhere.toml") and "create it" in str(error)


def test_load_accounts_uses_the_file_s_real_mode(site: DmaSite) -> None:
    """The mode the parser judges is the file's: a password in a 0644 file is refused."""
    _site_with_accounts(site, account(f'host = "h"\nlogin = "l"\npassword = "{SECRET}"\n'),
                        mode=0o644)
    error = _load_error(site)
    assert "keeps its password" in error.message and SECRET not in str(error)


def test_load_accounts_refuses_a_fifo_without_hanging(site: DmaSite) -> None:
    """ACCOUNTS naming a FIFO is refused at once (opened non-blocking)."""
    os.mkfifo(site.root / "fifo.toml")
    site.write_config("ACCOUNTS fifo.toml\n")
    assert "not a regular file" in _load_error(site).message


def test_load_accounts_is_bounded(site: DmaSite) -> None:
    """A file over ACCOUNTS_READ_LIMIT octets is refused after reading just past the limit."""
    _site_with_accounts(site, b"#" * (ACCOUNTS_READ_LIMIT + 10))
    assert "over" in _load_error(site).message


def test_load_accounts_names_the_line_that_is_not_utf8(site: DmaSite) -> None:
    """Octets that are not UTF-8 are a ConfigError at their line."""
    _site_with_accounts(site, b'[accounts.a]\nhost = "h\xff"\n')
    error = _load_error(site)
    assert error.where == f"{site.root / 'accounts.toml'}:2" and "UTF-8" in error.message


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_load_accounts_refuses_another_user_s_file(site: DmaSite) -> None:
    """A file owned by neither root nor the user running dma is refused: its owner would
    choose the commands dma runs."""
    path = _site_with_accounts(site, account('host = "h"\n'))
    os.chown(path, 65534, 65534)
    assert "owned by uid 65534" in _load_error(site).message


def test_submission_does_not_import_tomllib(site: DmaSite) -> None:
    """Queuing a message with ACCOUNTS set never imports tomllib or the accounts parser
    (a submission's start-up time matters)."""
    _site_with_accounts(site, SPEC_EXAMPLE)
    probe = (
        "import sys\nfrom dma.shell.main import main\n"
        "code = main(['sendmail', '-C', sys.argv[1], 'root@example.org'])\n"
        "bad = [m for m in ('tomllib', 'dma.core.accounts') if m in sys.modules]\n"
        "print(code, bad)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe, str(site.config)],
                          input=b"Subject: x\n\nhi\n", capture_output=True, env=site.environ,
                          cwd=site.root, timeout=60, check=False)
    assert done.stdout.decode().split("\n")[-2] == "0 []", done.stderr.decode()


# -- -bv shows the sender's route and account ---------------------------------------------

BV_ACCOUNTS = (
    account('host = "smtp.office365.com"\nlogin = "alerts@example.com"\n'
            'password_command = ["pass", "show", "office"]\n', "office")
    + account('host = "smtp.fastmail.com"\ntls = "smtps"\nlogin = "me@fastmail.com"\n'
              'password_file = "fastmail.pw"\nauth = "scram-sha-256"\n', "fastmail")
    + '[routes]\n"@example.com" = "office"\n"me@fastmail.com" = "fastmail"\n'
)


def _bv(site: DmaSite, *args: str, env: dict[str, str] | None = None) -> list[str]:
    done = site.run(["-bv", *args], env=env)
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode().splitlines()


def test_bv_shows_each_sender_s_account(site: DmaSite) -> None:
    """-bv with -f names the account a route gives the sender, with its host, port, TLS,
    login and secret source (never the secret), and the route that chose it."""
    _site_with_accounts(site, BV_ACCOUNTS)
    assert _bv(site, "-f", "alerts@EXAMPLE.com", "x@remote.example") == [
        "x@remote.example: x@remote.example: remote via account office (smtp.office365.com"
        " port 587, tls starttls, login alerts@example.com, secret from password_command)"
        " for sender <alerts@EXAMPLE.com> by route @example.com"]
    assert _bv(site, "-f", "me@fastmail.com", "x@remote.example") == [
        "x@remote.example: x@remote.example: remote via account fastmail (smtp.fastmail.com"
        " port 465, tls smtps, login me@fastmail.com, secret from password_file, auth"
        " SCRAM-SHA-256) for sender <me@fastmail.com> by route me@fastmail.com"]


def test_bv_default_sender_is_routed_too(site: DmaSite) -> None:
    """Without -f, -bv routes the sender a submission would use ($EMAIL here)."""
    _site_with_accounts(site, BV_ACCOUNTS)
    lines = _bv(site, "x@remote.example", env={"EMAIL": "me@fastmail.com"})
    assert "via account fastmail" in lines[0] and "<me@fastmail.com>" in lines[0]


def test_bv_unmatched_and_null_senders_take_the_default_route(site: DmaSite) -> None:
    """A sender no route names, and the null sender, take the default route (SMARTHOST
    here), and -bv says so; local recipients are shown as before."""
    _site_with_accounts(site, BV_ACCOUNTS)
    default = "remote via smarthost 127.0.0.1 port 9; sender <{}> takes the default route"
    assert _bv(site, "-f", "a@other.org", "x@remote.example") == [
        "x@remote.example: x@remote.example: " + default.format("a@other.org")]
    assert _bv(site, "-f", "", "x@remote.example") == [
        "x@remote.example: x@remote.example: " + default.format("")]
    me = pwd.getpwuid(os.getuid()).pw_name
    assert _bv(site, "-f", "me@fastmail.com", me) == [
        f"{me}: {me}: local mailbox {site.maildir / me}"]


def test_bv_reports_a_broken_accounts_file(site: DmaSite) -> None:
    """-bv with a broken accounts file exits 78 naming the file, the line and the fix."""
    path = _site_with_accounts(site, BV_ACCOUNTS.replace("tls = ", "tsl = "))
    done = site.run(["-bv", "x@remote.example"])
    assert done.returncode == sysexits.EX_CONFIG
    assert f"{path}:7: account 'fastmail': unknown key 'tsl' (did you mean tls?)" in \
        done.stderr.decode()


# -- an account's TLS policy ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "security"),
    [
        ('tls = "smtps"\n', Security(True, "no", True, None)),
        ('tls = "starttls"\n', Security(False, "required", True, None)),
        ('tls = "opportunistic"\n', Security(False, "opportunistic", False, None)),
        ('tls = "none"\n', Security(False, "no", False, None)),
        ('tls = "smtps"\nverify = false\n', Security(True, "no", False, None)),
        (f'fingerprint = "{SHA}"\n', Security(False, "required", True, bytes.fromhex(SHA))),
        (f'tls = "opportunistic"\nfingerprint = "{SHA}"\n',
         Security(False, "opportunistic", False, bytes.fromhex(SHA))),
    ],
)
def test_account_security(body: str, security: Security) -> None:
    """An account's tls, verify and fingerprint give the session's TLS policy: implicit TLS
    for smtps, STARTTLS required (verified unless verify = false) or opportunistic
    (unverified, as OPPORTUNISTIC_TLS), none; a fingerprint pins."""
    assert account_security(parse(account('host = "h"\n' + body)).accounts["a"]) == security
