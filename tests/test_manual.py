"""The dma(8) page and ``dma --help``: one source, every option and key, clean roff."""

from __future__ import annotations

import importlib
import os
import re
import shutil
import string
import subprocess
from pathlib import Path

import pytest
from conftest import command

from dma.core import errors
from dma.core.cmdline import HELP_OPTION, Invocation, Mode, parse_command_line
from dma.core.config import KEYS
from dma.core.errors import DmaError, UsageError
from dma.core.manual import (
    ENVIRONMENT,
    EXIT_STATUS,
    help_text,
    option_flags,
    option_forms,
    roff,
)

ROOT = Path(__file__).resolve().parent.parent
# Every single character an option letter could be, but the dash itself.
_CANDIDATES = string.ascii_letters + string.digits + "".join(
    c for c in string.punctuation if c != "-"
)


# --- which options the parser accepts, found by asking it --------------------------------


def _refusal(argv: list[str]) -> str | None:
    """The usage error message argv gets, or None when it parses."""
    try:
        parse_command_line(argv)
    except UsageError as error:
        return error.message
    except DmaError:
        return None
    return None


def _accepted_letters(program: str) -> set[str]:
    """Option letters that ``program`` knows: those not refused as invalid options."""
    known = set()
    for letter in _CANDIDATES:
        message = _refusal([program, f"-{letter}", "x"])
        if not (message or "").startswith(f"invalid option -{letter}"):
            known.add(letter)
    return known


def _accepted_after(prefix: str, refusal: str) -> set[str]:
    """Letters that may follow ``prefix`` (``-b``, ``-Q``): those not refused with ``refusal``."""
    return {
        letter
        for letter in _CANDIDATES
        if not (_refusal(["dma", f"{prefix}{letter}", "x"]) or "").startswith(refusal)
    }


def test_parser_discovery_finds_the_known_option_set() -> None:
    """The probe sees sendmail's letters and refuses others, so the coverage tests can fail."""
    letters = _accepted_letters("dma")
    assert {"t", "i", "f", "q", "b", "Q", "C"} <= letters
    assert not {"Z", "z", "1", "%"} & letters
    assert _accepted_letters("mailq") == {"j", "v", "C"}


def test_every_option_the_parser_accepts_is_documented() -> None:
    """Each option letter of dma/sendmail and of mailq has an entry in the manual's table."""
    flags = option_flags()
    for letter in _accepted_letters("dma") | _accepted_letters("mailq"):
        assert any(flag.startswith(f"-{letter}") for flag in flags), f"-{letter}"


def test_every_mode_and_queue_operation_is_documented() -> None:
    """Each -bX mode, -QX operation and -q form that the parser knows has its own entry."""
    flags = option_flags()
    for letter in _accepted_after("-b", "unknown mode"):
        assert f"-b{letter}" in flags, f"-b{letter}"
    for letter in _accepted_after("-Q", "unknown queue operation"):
        assert f"-Q{letter}" in flags, f"-Q{letter}"
    for letter in string.ascii_letters:
        if not (_refusal(["dma", f"-q{letter}", "x"]) or "").startswith("invalid queue interval"):
            assert f"-q{letter}" in flags, f"-q{letter}"
    assert HELP_OPTION in flags


def test_every_documented_option_is_accepted() -> None:
    """The table documents no option that the parser refuses as unknown (-bd is refused
    on purpose, with its own message)."""
    unknown = ("invalid option", "unknown mode", "unknown queue operation",
               "invalid queue interval")
    for flag in option_flags():
        if flag in (HELP_OPTION, "-j"):  # -j is mailq's
            continue
        message = _refusal(["dma", flag, "x"]) or ""
        assert not message.startswith(unknown), (flag, message)
    assert _refusal(["mailq", "-j"]) is None


# --- --help on the command line -----------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["dma", "--help"],
        ["sendmail", "-t", "--help"],
        ["sendmail", "a@b", "--help", "-Z"],
        ["dma", "-bp", "--help"],
        ["dma", "-q", "--help"],
        ["/usr/bin/mailq", "--help"],
        ["newaliases", "-v", "--help"],
    ],
)
def test_help_option_asks_for_help(argv: list[str]) -> None:
    """--help, wherever getopt would read an option, gives the HELP mode and nothing else."""
    invocation = parse_command_line(argv)
    assert invocation == Invocation(program=invocation.program, mode=Mode.HELP)


def test_help_after_double_dash_or_as_a_value_is_a_word() -> None:
    """After -- or as an option's value, --help is an ordinary argument, as in getopt."""
    assert parse_command_line(["dma", "--", "--help"]).recipients == ("--help",)
    assert parse_command_line(["dma", "-f", "--help", "a@b"]).sender == "--help"
    assert parse_command_line(["newaliases", "-C", "--help"]).mode is Mode.NEWALIASES


def test_an_invalid_option_before_help_is_still_an_error() -> None:
    """Options are read in order: an unknown one before --help is a usage error (exit 64)."""
    with pytest.raises(UsageError, match="invalid option -Z"):
        parse_command_line(["dma", "-Z", "--help"])


@pytest.mark.parametrize("word", ["--hel", "--helpme", "--version", "--help=1", "---"])
def test_other_long_options_are_named_in_the_error(word: str) -> None:
    """A long option other than --help is refused with its whole spelling, not just '--'."""
    with pytest.raises(UsageError) as caught:
        parse_command_line(["dma", word])
    assert caught.value.message == f"invalid option {word}"
    assert caught.value.exit_code == 64


def test_h_stays_the_hop_count() -> None:
    """-h keeps sendmail's meaning (hop count, ignored): it is not help."""
    assert parse_command_line(["sendmail", "-h", "5", "a@b"]).mode is Mode.SEND
    with pytest.raises(UsageError, match="option -h needs an argument"):
        parse_command_line(["sendmail", "-h"])


# --- help_text ----------------------------------------------------------------------------


def test_help_text_lists_every_option_and_key_in_80_columns() -> None:
    """dma --help shows every documented spelling and every dma.conf key, in lines of
    at most 79 columns."""
    text = help_text()
    for form in option_forms():
        assert form in text, form
    words = set(text.split())
    for key in KEYS:
        assert key in words, key
    assert max(len(line) for line in text.splitlines()) <= 79
    assert text.endswith("\n") and "\t" not in text


def test_dma_help_prints_the_summary_and_exits_0(tmp_path: Path) -> None:
    """`dma --help` prints help_text() and exits 0, even when dma.conf is broken."""
    broken = tmp_path / "dma.conf"
    broken.write_text("NOSUCHKEY\n")
    environ = {**os.environ, "DMA_CONF": str(broken), "HOME": str(tmp_path)}
    done = subprocess.run([*command("dma"), "--help"], env=environ, capture_output=True,
                          text=True, timeout=60, check=False)
    assert (done.returncode, done.stdout, done.stderr) == (0, help_text(), "")


# --- the roff page -------------------------------------------------------------------------


def _tool(name: str) -> str:
    """A formatter's path; skips when it is missing, fails in CI where setup installs it."""
    found = shutil.which(name)
    if found is None:
        message = f"{name} is not installed (scripts/setup installs it as root)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """roff() written to a dma.8 file."""
    path = tmp_path_factory.mktemp("man") / "dma.8"
    path.write_text(roff(), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def rendered(page: Path) -> str:
    """The page as groff renders it, plain text, lines too long to ever break."""
    done = subprocess.run(
        [_tool("groff"), "-man", "-Tutf8", "-P-cbou", "-rLL=2000n", "-rHY=0", str(page)],
        capture_output=True, text=True, timeout=60, check=True,
    )
    return done.stdout.replace("\u2212", "-").replace("\u2010", "-")


def _section(text: str, title: str) -> str:
    """The rendered text of one SH section (up to the next heading at column 0)."""
    match = re.search(rf"^{title}\n(.*?)(?=^\S)", text, re.MULTILINE | re.DOTALL)
    assert match is not None, title
    return match.group(1)


def test_groff_renders_the_page_without_warnings(page: Path) -> None:
    """groff with every warning on (-ww) formats the page and says nothing."""
    done = subprocess.run(
        [_tool("groff"), "-man", "-Tutf8", "-ww", "-z", str(page)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert (done.returncode, done.stderr) == (0, "")


def test_man_shows_the_page_without_warnings(page: Path) -> None:
    """man -l (man-db, with groff's warnings on) shows the page: name, sections, no
    complaint."""
    environ = {**os.environ, "MANWIDTH": "80", "MAN_KEEP_FORMATTING": "", "LC_ALL": "C.UTF-8"}
    done = subprocess.run(
        [_tool("man"), "--warnings=w", "-l", str(page)],
        capture_output=True, text=True, timeout=60, check=False, env=environ,
    )
    assert (done.returncode, done.stderr) == (0, "")
    for heading in ("NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "CONFIGURATION", "FILES",
                    "SYSTEM MODE", "EXIT STATUS", "ENVIRONMENT", "SEE ALSO"):
        assert f"\n{heading}\n" in done.stdout, heading


def test_mandoc_lint_finds_nothing(page: Path) -> None:
    """mandoc -Tlint, style messages included, has nothing to say about the page."""
    done = subprocess.run(
        [_tool("mandoc"), "-Tlint", "-W", "all", str(page)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


def test_page_names_every_option(rendered: str) -> None:
    """Every documented spelling appears in OPTIONS as the page shows it."""
    options = _section(rendered, "OPTIONS")
    for form in option_forms():
        assert form in options, form


def test_page_gives_every_key_its_default_and_meaning(rendered: str) -> None:
    """Each dma.conf key has an entry in CONFIGURATION holding its description and the
    default that the README table and the parser give."""
    configuration = _section(rendered, "CONFIGURATION")
    for name, spec in KEYS.items():
        entry = re.search(
            rf"^ {{7}}{name}(?: [a-z0-9]+)?(?:\n {{14}}| +)(.*)$", configuration, re.MULTILINE
        )
        assert entry is not None, name
        body = entry.group(1)
        assert spec.doc[1:] in body, name
        if spec.kind == "bool":
            assert "Off unless given." in body, name
        elif spec.default not in ("unset", "-"):
            assert f"Default: {spec.default}." in body, name


def test_page_documents_every_exit_code_dma_raises(rendered: str) -> None:
    """Every sysexits code an error class carries is explained under EXIT STATUS (every
    module is imported first, so no error class hides in one not loaded yet)."""
    for package in ("core", "shell", "adapters"):
        for source in sorted((ROOT / package).glob("*.py")):
            if source.stem != "__init__":
                importlib.import_module(f"dma.{package}.{source.stem}")
    codes = {code for code, _ in EXIT_STATUS}
    pending = [errors.DmaError]
    while pending:
        cls = pending.pop()
        assert cls.exit_code in codes, cls.__name__
        pending += cls.__subclasses__()
    exit_status = _section(rendered, "EXIT STATUS")
    for code in codes:
        assert re.search(rf"^ {{7}}{code} ", exit_status, re.MULTILINE), code


def test_page_documents_every_environment_variable_the_program_reads(rendered: str) -> None:
    """Each variable that shell/ or adapters/ read from the environment is under ENVIRONMENT."""
    read = set()
    pattern = re.compile(
        r"""(?:environ(?:ment\(\))?\.get|getenv)\(\s*["']([A-Z_]+)["']|_VARIABLE = "([A-Z_]+)\""""
    )
    for source in [*(ROOT / "shell").glob("*.py"), *(ROOT / "adapters").glob("*.py")]:
        for match in pattern.finditer(source.read_text(encoding="utf-8")):
            read.add(match.group(1) or match.group(2))
    assert {"DMA_CONF", "EMAIL", "DMA_LOCK_TIMEOUT"} <= read  # the scan sees them
    documented = {name for name, _ in ENVIRONMENT}
    assert read <= documented, read - documented
    environment = _section(rendered, "ENVIRONMENT")
    for name in documented:
        assert re.search(rf"^ {{7}}{name}\b", environment, re.MULTILINE), name


def test_page_files_match_the_embedded_layout(
    rendered: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The embedded default's paths under FILES are the ones the shell uses."""
    from dma.shell.settings import embedded_layout

    monkeypatch.setenv("HOME", "~")
    layout = embedded_layout({})
    files = _section(rendered, "FILES")
    for path in (layout.config_file, layout.defaults().spooldir, layout.defaults().maildir):
        assert re.search(rf"^ {{7}}{re.escape(path)}$", files, re.MULTILINE), path


def test_roff_text_lines_are_safe() -> None:
    """The page is ASCII, no text line starts with a dot or quote that roff would read as
    a request, and none is longer than mandoc's 80 bytes."""
    requests = re.compile(r"\.(TH|SH|SS|TP|PP|BR|br)( |$)")
    assert roff().isascii()
    for line in roff().splitlines():
        if line.startswith((".", "'")):
            assert requests.match(line), line
        assert len(line.encode()) <= 80 or line.startswith(".TH"), line
