"""dma.conf parsing: the C dma's meaning, our deliberate differences, every error."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from dma.core import sysexits
from dma.core.config import (
    KEYS,
    Config,
    key_line,
    mailname_from_file,
    nameserver_address,
    parse_config,
    render_config,
)
from dma.core.errors import ConfigError

PATH = "/etc/dma/dma.conf"
SHA = "0123456789abcdef" * 4


def parse(text: str, defaults: Config = Config()) -> Config:  # noqa: B008
    return parse_config(text, PATH, defaults)


def error_of(text: str) -> ConfigError:
    return error_of_with(text, Config())


def error_of_with(text: str, defaults: Config) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        parse(text, defaults)
    return caught.value


# -- golden cases: files the C dma accepts mean the same ------------------------------


def test_empty_file_gives_defaults() -> None:
    """An empty file (or a missing one, which the shell reads as empty) changes nothing."""
    assert parse("") == Config()
    assert parse("\n\n# only a comment\n") == Config()


def test_sample_config_from_c_dma() -> None:
    """A typical C dma config sets its strings, booleans and numbers."""
    text = (
        "# relay\n"
        "SMARTHOST mail.example.net\n"
        "PORT 587\n"
        "AUTHPATH /etc/dma/auth.conf\n"
        "SECURETRANSFER\n"
        "STARTTLS\n"
        "MASQUERADE john@example.org\n"
        "MAILNAME /etc/mailname\n"
        "#SECURE\n"
    )
    config = parse(text)
    assert config == dataclasses.replace(
        Config(),
        smarthost="mail.example.net",
        port=587,
        authpath="/etc/dma/auth.conf",
        securetransfer=True,
        starttls=True,
        masquerade="john@example.org",
        mailname="/etc/mailname",
    )


def test_hash_cuts_the_line_anywhere() -> None:
    """A '#' anywhere starts a comment, also inside a value."""
    assert parse("SMARTHOST mx.example.com#backup\n").smarthost == "mx.example.com"
    assert parse("DEFER # comment\n").defer is True


def test_key_ends_at_first_blank_or_tab() -> None:
    """The key ends at the first space or tab; the rest of the line is the value."""
    assert parse("SMARTHOST\thost.example\n").smarthost == "host.example"
    assert parse("ALIASES /etc/my aliases\n").aliases == "/etc/my aliases"
    assert parse("CAFILE /etc/ca\tbundle\n").cafile == "/etc/ca\tbundle"


def test_mailname_must_be_a_domain_or_a_path() -> None:
    """MAILNAME takes a domain name, an address literal or an absolute path; anything
    else is refused at its line instead of failing every submission later."""
    assert parse("MAILNAME mail.example.org\n").mailname == "mail.example.org"
    assert parse("MAILNAME /etc/mailname\n").mailname == "/etc/mailname"
    assert parse("MAILNAME [192.0.2.1]\n").mailname == "[192.0.2.1]"
    assert parse("MAILNAME mail.example.org.\n").mailname == "mail.example.org"
    for bad in ("my host", "ex..org", "-x.org", "a@b"):
        with pytest.raises(ConfigError) as caught:
            parse(f"DEFER\nMAILNAME {bad}\n")
        assert caught.value.where == "/etc/dma/dma.conf:2"
        assert "MAILNAME" in caught.value.message and "mail name" in (caught.value.hint or "")


def test_masquerade_forms_are_checked() -> None:
    """MASQUERADE takes user@, host, @host or user@host with valid parts; others are refused."""
    for good in ("user@", "example.org", "@example.org", "user@example.org"):
        assert parse(f"MASQUERADE {good}\n").masquerade == good
    for bad in ("a b", "@", "user@bad host", "us er@x.org", "x@y@"):
        with pytest.raises(ConfigError) as caught:
            parse(f"MASQUERADE {bad}\n")
        assert caught.value.where == "/etc/dma/dma.conf:1"
        assert "user@, host, @host or user@host" in (caught.value.hint or "")


def test_last_string_wins() -> None:
    """A string key given twice keeps its last value."""
    assert parse("SMARTHOST one\nSMARTHOST two\n").smarthost == "two"
    assert parse("PORT 26\nPORT 27\n").port == 27


def test_booleans_only_turn_on() -> None:
    """A boolean key sets its flag; repeating it or starting from on keeps it on."""
    assert parse("DEFER\nDEFER\n").defer is True
    on = dataclasses.replace(Config(), fullbounce=True)
    assert parse("DEFER\n", on) == dataclasses.replace(on, defer=True)


def test_defaults_argument_is_the_base() -> None:
    """Keys not in the file keep the values of the defaults argument."""
    base = dataclasses.replace(Config(), spooldir="/tmp/spool", port=2525)
    assert parse("SMARTHOST relay\n", base) == dataclasses.replace(base, smarthost="relay")


def test_boolean_with_one_trailing_space() -> None:
    """'DEFER ' with one trailing space is accepted, as by the C dma."""
    assert parse("DEFER \n").defer is True


@pytest.mark.parametrize(
    ("key", "field"),
    [
        ("SECURETRANSFER", "securetransfer"),
        ("NOVERIFYCERT", "noverifycert"),
        ("INSECURE", "insecure"),
        ("DEFER", "defer"),
        ("FULLBOUNCE", "fullbounce"),
        ("LOCALONLY", "localonly"),
    ],
)
def test_each_boolean_key(key: str, field: str) -> None:
    """Each boolean key turns on its own field and nothing else."""
    changes: dict[str, Any] = {field: True}
    assert parse(f"{key}\n") == dataclasses.replace(Config(), **changes)


@pytest.mark.parametrize(
    ("key", "field"),
    [
        ("STARTTLS", "starttls"),
        ("OPPORTUNISTIC_TLS", "opportunistic_tls"),
        ("VERIFYCERT", "verifycert"),
    ],
)
def test_each_tls_boolean_key(key: str, field: str) -> None:
    """Each TLS boolean key, given with SECURETRANSFER, turns on its own field and nothing else."""
    changes: dict[str, Any] = {field: True, "securetransfer": True}
    assert parse(f"SECURETRANSFER\n{key}\n") == dataclasses.replace(Config(), **changes)
    assert parse(f"{key}\nSECURETRANS\n") == dataclasses.replace(Config(), **changes)


@pytest.mark.parametrize(
    ("key", "field"),
    [
        ("SMARTHOST", "smarthost"),
        ("ALIASES", "aliases"),
        ("SPOOLDIR", "spooldir"),
        ("AUTHPATH", "authpath"),
        ("CERTFILE", "certfile"),
        ("CAFILE", "cafile"),
        ("MAILNAME", "mailname"),
        ("MASQUERADE", "masquerade"),
        ("MAILDIR", "maildir"),
    ],
)
def test_each_string_key(key: str, field: str) -> None:
    """Each string key sets its own field to the value verbatim."""
    changes: dict[str, Any] = {field: "/some/Value@x"}
    assert parse(f"{key} /some/Value@x\n") == dataclasses.replace(Config(), **changes)


def test_nullclient_with_smarthost() -> None:
    """NULLCLIENT together with SMARTHOST is accepted, in either order."""
    config = parse("NULLCLIENT\nSMARTHOST relay\n")
    assert config.nullclient is True
    assert config.smarthost == "relay"


def test_fingerprint_is_case_insensitive() -> None:
    """FINGERPRINT reads 64 hex digits in either case into 32 bytes."""
    assert parse(f"SECURETRANSFER\nFINGERPRINT {SHA.upper()}\n").fingerprint == bytes.fromhex(SHA)
    assert parse(f"SECURETRANSFER\nFINGERPRINT {SHA}\n").fingerprint == bytes.fromhex(SHA)


# -- deliberate differences, one test each --------------------------------------------


def test_leading_blanks_are_ignored() -> None:
    """A line indented with blanks counts (the C dma silently skips it)."""
    assert parse("  SMARTHOST relay\n\tDEFER\n") == dataclasses.replace(
        Config(), smarthost="relay", defer=True
    )


def test_trailing_blanks_are_ignored() -> None:
    """Trailing blanks are dropped: 'DEFER   ' is fine and values do not end in blanks."""
    assert parse("DEFER   \n").defer is True
    assert parse("SMARTHOST relay \t\n").smarthost == "relay"


def test_blanks_between_key_and_value_are_one_separator() -> None:
    """Several blanks after the key do not start the value (the C dma keeps them)."""
    assert parse("SMARTHOST  \t relay\n").smarthost == "relay"


def test_trailing_cr_is_ignored() -> None:
    """A CRLF file means the same as an LF file (the C dma keeps the CR)."""
    assert parse("SMARTHOST relay\r\nDEFER\r\nPORT 2525\r\n") == dataclasses.replace(
        Config(), smarthost="relay", defer=True, port=2525
    )


def test_boolean_with_value_says_to_remove_it() -> None:
    """'DEFER yes' is an error whose hint says to remove the value."""
    error = error_of("DEFER yes\n")
    assert error.where == f"{PATH}:1"
    assert "DEFER takes no value" in error.message
    assert "'yes'" in error.message
    assert error.hint is not None and "remove the value" in error.hint


def test_unknown_key_names_closest_key() -> None:
    """An unknown key names the file, the line and the closest known key."""
    error = error_of("# hi\nSMARTHOTS relay\n")
    assert error.where == f"{PATH}:2"
    assert "unknown key 'SMARTHOTS'" in error.message
    assert error.hint == "did you mean SMARTHOST?"


def test_unknown_key_without_close_match() -> None:
    """An unknown key like no known one points at the README table."""
    error = error_of("XYZZY\n")
    assert "unknown key 'XYZZY'" in error.message
    assert error.hint is not None and "README" in error.hint


def test_lowercase_key_hint_says_capitals() -> None:
    """A known key in lower case gets the hint to write it in capitals."""
    error = error_of("smarthost relay\n")
    assert error.where == f"{PATH}:1"
    assert error.hint == "keys are case-sensitive: write SMARTHOST"


def test_securetrans_is_securetransfer() -> None:
    """SECURETRANS, the manual's spelling, is the same key as SECURETRANSFER."""
    assert parse("SECURETRANS\n") == parse("SECURETRANSFER\n")
    assert parse("SECURETRANS\n").securetransfer is True


def test_secure_changes_nothing() -> None:
    """SECURE, the manual's placeholder, is accepted and changes nothing."""
    assert parse("SECURE\n") == Config()


def test_secure_with_value_is_an_error() -> None:
    """SECURE given a value is an error like any boolean with a value."""
    error = error_of("SECURE yes\n")
    assert "SECURE takes no value" in error.message


def test_nul_character_is_an_error() -> None:
    """A NUL byte in a line is an error naming the line (the C dma cuts the line there)."""
    error = error_of("DEFER\nSMARTHOST a\0b\n")
    assert error.where == f"{PATH}:2"
    assert "NUL" in error.message


# -- value errors ---------------------------------------------------------------------


@pytest.mark.parametrize("key", ["SMARTHOST", "ALIASES", "PORT", "FINGERPRINT", "NAMESERVER"])
def test_value_key_without_value(key: str) -> None:
    """A key that needs a value is an error without one, also when only blanks follow."""
    for text in (f"{key}\n", f"{key}   \n", f"{key} # comment\n"):
        error = error_of(text)
        assert error.message == f"{key} needs a value"
        assert error.where == f"{PATH}:1"
        assert error.hint is not None and key in error.hint


@pytest.mark.parametrize("value", ["1", "25", "465", "65535", "0587"])
def test_port_accepts_range(value: str) -> None:
    """PORT accepts whole numbers from 1 to 65535."""
    assert parse(f"PORT {value}\n").port == int(value)


@pytest.mark.parametrize("value", ["0", "65536", "-1", "+25", "25abc", "2_5", "smtp", "1e3"])
def test_port_rejects_others(value: str) -> None:
    """PORT rejects anything else (the C dma's atoi reads junk as 0 or a prefix)."""
    error = error_of(f"PORT {value}\n")
    assert "PORT must be a port number from 1 to 65535" in error.message
    assert error.hint is not None


def test_maxconnections() -> None:
    """MAXCONNECTIONS takes a positive whole number and rejects zero, junk and huge values."""
    assert parse("MAXCONNECTIONS 10\n").maxconnections == 10
    for value in ("0", "-3", "four", "1001", "9" * 40):
        error = error_of(f"MAXCONNECTIONS {value}\n")
        assert "MAXCONNECTIONS must be a whole number from 1 to 1000" in error.message


@pytest.mark.parametrize(("value", "seconds"), [("5d", 432000), ("120h", 432000), ("90", 90)])
def test_queuelifetime_is_a_duration(value: str, seconds: int) -> None:
    """QUEUELIFETIME reads durations: units or plain seconds."""
    assert parse(f"QUEUELIFETIME {value}\n").queuelifetime == seconds


@pytest.mark.parametrize("value", ["0", "5x", "d5", "1" * 5000])
def test_queuelifetime_errors(value: str) -> None:
    """A bad QUEUELIFETIME is a ConfigError naming the key and the line."""
    error = error_of(f"\nQUEUELIFETIME {value}\n")
    assert error.where == f"{PATH}:2"
    assert error.message.startswith("QUEUELIFETIME: ")
    assert error.hint is not None
    assert error.exit_code == sysexits.EX_CONFIG


def test_fingerprint_allows_colons() -> None:
    """FINGERPRINT may be written with colons between the hex pairs, as openssl prints it."""
    colons = ":".join(SHA[i : i + 2] for i in range(0, 64, 2)).upper()
    assert parse(f"FINGERPRINT {colons}\nSECURETRANSFER\n").fingerprint == bytes.fromhex(SHA)


def test_fingerprint_wrong_length() -> None:
    """A FINGERPRINT that is not 64 hex digits long says how many it has."""
    error = error_of(f"FINGERPRINT {SHA[:-2]}\n")
    assert error.message == "FINGERPRINT has 62 hex digits, a SHA-256 fingerprint has 64"
    assert error.hint is not None and "openssl" in error.hint
    assert "has 0 hex digits" in error_of("FINGERPRINT ::\n").message


def test_fingerprint_not_hex() -> None:
    """A FINGERPRINT with non-hex characters is an error, not a crash."""
    error = error_of(f"FINGERPRINT {SHA[:-1]}g\n")
    assert "not hex digits" in error.message
    assert error.where == f"{PATH}:1"


@pytest.mark.parametrize(
    ("value", "address"),
    [
        ("127.0.0.1", ("127.0.0.1", 53)),
        ("127.0.0.1:5353", ("127.0.0.1", 5353)),
        ("::1", ("::1", 53)),
        ("[::1]:5353", ("::1", 5353)),
        ("[2001:db8::1]", ("2001:db8::1", 53)),
    ],
)
def test_nameserver_forms(value: str, address: tuple[str, int]) -> None:
    """NAMESERVER reads addr, addr:port, a bare IPv6 address and [v6]:port."""
    config = parse(f"NAMESERVER {value}\n")
    assert config.nameserver == value
    assert nameserver_address(config) == address


@pytest.mark.parametrize(
    "value",
    ["localhost", "1.2.3.4:", "1.2.3.4:0", "1.2.3.4:99999", "[::1", "[::1]x", "[::1]:",
     "[1.2.3.4]:53", "1.2.3.4:53:53", "300.1.1.1"],
)
def test_nameserver_errors(value: str) -> None:
    """A NAMESERVER that is not an IP address with an optional port is an error."""
    error = error_of(f"NAMESERVER {value}\n")
    assert "NAMESERVER must be an IP address with an optional port" in error.message
    assert error.hint is not None and "[::1]:5353" in error.hint


def test_nameserver_address_unset() -> None:
    """nameserver_address is None when NAMESERVER is not set."""
    assert nameserver_address(Config()) is None


def test_nameserver_address_rejects_bad_value() -> None:
    """nameserver_address raises ConfigError for a Config built with a bad NAMESERVER."""
    with pytest.raises(ConfigError):
        nameserver_address(dataclasses.replace(Config(), nameserver="nope"))


# -- whole-file checks ----------------------------------------------------------------


def test_nullclient_without_smarthost() -> None:
    """NULLCLIENT without SMARTHOST is an error naming the file."""
    error = error_of("NULLCLIENT\n")
    assert error.where == PATH
    assert error.message == "NULLCLIENT is set but SMARTHOST is not"
    assert error.hint is not None


def test_nullclient_with_localonly() -> None:
    """NULLCLIENT together with LOCALONLY is an error naming the file."""
    error = error_of("SMARTHOST relay\nNULLCLIENT\nLOCALONLY\n")
    assert error.where == PATH
    assert error.message == "NULLCLIENT and LOCALONLY are both set"
    assert error.hint is not None


_TLS_KEYS = ("FINGERPRINT", "VERIFYCERT", "STARTTLS", "OPPORTUNISTIC_TLS")


def _tls_line(key: str) -> str:
    return f"FINGERPRINT {SHA}" if key == "FINGERPRINT" else key


@pytest.mark.parametrize("key", _TLS_KEYS)
def test_tls_key_without_securetransfer_is_an_error(key: str) -> None:
    """FINGERPRINT, VERIFYCERT, STARTTLS or OPPORTUNISTIC_TLS without SECURETRANSFER is an
    error (exit 78) at the key's line whose hint says to add SECURETRANSFER or remove the key:
    without it no TLS is started and mail would go out in plain text."""
    error = error_of(f"# relay\nSMARTHOST relay\n{_tls_line(key)}\nDEFER\n")
    assert error.exit_code == sysexits.EX_CONFIG
    assert error.where == f"{PATH}:3"
    assert key in error.message and "SECURETRANSFER" in error.message
    assert "plain text" in error.message
    assert error.hint is not None
    assert "add SECURETRANSFER" in error.hint and f"remove {key}" in error.hint


def test_tls_keys_without_securetransfer_name_the_first_line_and_every_key() -> None:
    """Several TLS keys without SECURETRANSFER: the error is at the first one's line and
    names each of them."""
    error = error_of(f"DEFER\nVERIFYCERT\nSTARTTLS\nFINGERPRINT {SHA}\nSTARTTLS\n")
    assert error.where == f"{PATH}:2"
    for key in ("VERIFYCERT", "STARTTLS", "FINGERPRINT"):
        assert key in error.message
    assert "OPPORTUNISTIC_TLS" not in error.message


def test_tls_keys_with_securetransfer_anywhere_are_fine() -> None:
    """SECURETRANSFER (or SECURETRANS) before or after the TLS keys makes them valid."""
    lines = [_tls_line(key) for key in _TLS_KEYS]
    for spelling in ("SECURETRANSFER", "SECURETRANS"):
        for text in ("\n".join([spelling, *lines]), "\n".join([*lines, spelling])):
            config = parse(text + "\n")
            assert config.securetransfer and config.starttls and config.verifycert
            assert config.opportunistic_tls and config.fingerprint == bytes.fromhex(SHA)


def test_tls_key_from_defaults_without_securetransfer_names_the_file() -> None:
    """A TLS flag that comes from the defaults argument, not the file, is an error at the file."""
    error = error_of_with("DEFER\n", dataclasses.replace(Config(), starttls=True))
    assert error.where == PATH and "STARTTLS" in error.message


def test_cafile_alone_is_fine() -> None:
    """CAFILE only chooses whom to trust: it needs no SECURETRANSFER."""
    assert parse("CAFILE /etc/ssl/ca.pem\n") == dataclasses.replace(
        Config(), cafile="/etc/ssl/ca.pem"
    )


def test_noverifycert_and_insecure_alone_are_fine() -> None:
    """NOVERIFYCERT and INSECURE weaken nothing further without TLS: no error."""
    assert parse("NOVERIFYCERT\nINSECURE\n").noverifycert is True


def test_errors_exit_78_and_show_where() -> None:
    """Config errors carry EX_CONFIG and print as 'path:line: message (hint)'."""
    error = error_of("PORT x\n")
    assert error.exit_code == sysexits.EX_CONFIG == 78
    assert str(error).startswith(f"{PATH}:1: PORT must be")
    assert str(error).endswith(")")


def test_long_junk_is_shortened_in_errors() -> None:
    """An error quoting a very long key or value cuts it short."""
    error = error_of("K" * 5000 + "\n")
    assert len(str(error)) < 300


# -- KEYS table -----------------------------------------------------------------------


def test_keys_cover_every_field() -> None:
    """Every Config field is set by some key, and every key's field exists."""
    fields = {f.name for f in dataclasses.fields(Config)}
    set_by_keys = {spec.field for spec in KEYS.values() if spec.field is not None}
    assert set_by_keys == fields
    assert all(name == spec.name for name, spec in KEYS.items())


def test_keys_docs_are_one_line() -> None:
    """Every key has a one-line doc and a default text for the README table."""
    for spec in KEYS.values():
        assert spec.doc and "\n" not in spec.doc
        assert spec.default


@pytest.mark.parametrize("name", ["PORT", "MAXCONNECTIONS", "QUEUELIFETIME", "ALIASES", "MAILDIR",
                                  "SPOOLDIR"])
def test_keys_default_text_matches_config(name: str) -> None:
    """The default text shown for a key reads as the Config default."""
    spec = KEYS[name]
    assert spec.field is not None
    value = getattr(parse(f"{name} {spec.default}\n"), spec.field)
    assert value == getattr(Config(), spec.field)


def test_keys_is_read_only() -> None:
    """KEYS cannot be changed by a caller."""
    with pytest.raises(TypeError):
        KEYS["NEW"] = KEYS["PORT"]  # type: ignore[index]


# -- render ---------------------------------------------------------------------------


def test_render_default_is_empty() -> None:
    """The default Config renders as an empty file."""
    assert render_config(Config()) == ""


def test_render_non_default_keys_only() -> None:
    """render_config writes only changed keys, canonical names, and reads back the same."""
    config = dataclasses.replace(
        Config(),
        smarthost="relay",
        port=587,
        securetransfer=True,
        fingerprint=bytes.fromhex(SHA),
        queuelifetime=3 * 86400,
        nameserver="[::1]:53",
    )
    text = render_config(config)
    assert text == (
        "SMARTHOST relay\n"
        "PORT 587\n"
        f"FINGERPRINT {SHA}\n"
        "SECURETRANSFER\n"
        "NAMESERVER [::1]:53\n"
        "QUEUELIFETIME 3d\n"
    )
    assert parse(text) == config


@pytest.mark.parametrize(
    "changes",
    [
        {"smarthost": ""},
        {"smarthost": "a#b"},
        {"masquerade": " john@"},
        {"mailname": "x\ny"},
        {"port": 0},
        {"queuelifetime": 0},
        {"fingerprint": b"short"},
        {"nameserver": "host"},
        {"nullclient": True},
        {"starttls": True},
        {"opportunistic_tls": True},
        {"verifycert": True},
        {"fingerprint": bytes(32)},
    ],
)
def test_render_refuses_what_cannot_be_written(changes: dict[str, Any]) -> None:
    """render_config raises ConfigError for a Config no dma.conf can express."""
    with pytest.raises(ConfigError, match="cannot be written"):
        render_config(dataclasses.replace(Config(), **changes))


# -- MAILNAME file --------------------------------------------------------------------


def test_key_line_names_the_line_that_counts() -> None:
    """key_line gives path:line of the last line setting a field (aliases of a key
    included), and the bare path when no line sets it."""
    text = "# x\nMAILNAME /a\n\nDEFER\nMAILNAME /b # again\nSECURETRANS\n"
    assert key_line(text, PATH, "mailname") == f"{PATH}:5"
    assert key_line(text, PATH, "securetransfer") == f"{PATH}:6"
    assert key_line(text, PATH, "smarthost") == PATH


@pytest.mark.parametrize(
    ("line", "name"),
    [
        ("mail.example.com\n", "mail.example.com"),
        ("mail.example.com", "mail.example.com"),
        ("my_host-1.example.org extra", "my_host-1.example.org"),
        ("host\r\n", "host"),
        ("host#x", "host"),
        ("ünicode", None),
        (" leading", None),
        ("", None),
        ("\n", None),
    ],
)
def test_mailname_from_file(line: str, name: str | None) -> None:
    """The MAILNAME file's name ends at the first character not alnum, '_', '.', '-'."""
    assert mailname_from_file(line) == name
