"""adapters/secrets: an account's password from the accounts file, a password_file or a
password_command run as a real process (SPEC 2.4); failures defer and never show the
secret."""

from __future__ import annotations

import os
import pwd
import time
from pathlib import Path

import pytest
import structlog
from structlog.testing import capture_logs

from dma.adapters.secrets import (
    COMMAND_PATH,
    MAX_FILE_OCTETS,
    MAX_OUTPUT,
    Secrets,
    read_password_file,
    run_secret_command,
    secret_for,
)
from dma.core import sysexits
from dma.core.accounts import Account, OAuth2
from dma.core.errors import SoftwareError, TempFailure

SECRET = "s3cr3t-Pa55-word"
WHAT = "account office: password_command"


def run(script: str, *, timeout: float = 10.0, environ: dict[str, str] | None = None) -> str:
    """The secret that ``sh -c script`` gives as a password_command."""
    return run_secret_command(["sh", "-c", script], what=WHAT, timeout=timeout,
                              environ=environ or {})


def failure(script: str, **options: float) -> TempFailure:
    """The TempFailure of ``sh -c script``; its text never holds SECRET."""
    with pytest.raises(TempFailure) as caught:
        run(script, **options)  # type: ignore[arg-type]
    error = caught.value
    assert error.exit_code == sysexits.EX_TEMPFAIL
    assert SECRET not in str(error) and SECRET not in repr(error)
    assert str(error).startswith(f"{WHAT} sh: ") and error.hint
    return error


# -- password_command ---------------------------------------------------------------------


def test_first_stdout_line_is_the_secret() -> None:
    """The command's first stdout line, without its line end (LF or CRLF), is the secret;
    later lines (pass keeps login and url there) are ignored."""
    assert run(f"printf '{SECRET}\\r\\nlogin: me\\nurl: x\\n'") == SECRET
    assert run(f"printf '{SECRET}'") == SECRET


def test_the_command_gets_a_minimal_environment() -> None:
    """PATH is the system's, HOME and USER the running user's from the password database,
    LANG C.UTF-8, GNUPGHOME passed through; nothing else of ours (stdin is /dev/null)."""
    entry = pwd.getpwuid(os.geteuid())
    environ = {"PATH": "/evil", "HOME": "/elsewhere", "GNUPGHOME": "/g", "FOO": "leak",
               "LD_PRELOAD": "/evil.so", "DMA_CONF": "/x"}
    line = run('read -r stdin_line; printf "%s|" "$PATH" "$HOME" "$USER" "$LANG" "$GNUPGHOME"'
               ' "${FOO-unset}" "${LD_PRELOAD-unset}" "${DMA_CONF-unset}" "[$stdin_line]";'
               " echo", environ=environ)
    assert line.split("|") == [COMMAND_PATH, entry.pw_dir, entry.pw_name, "C.UTF-8", "/g",
                               "unset", "unset", "unset", "[]", ""]


def test_no_shell_runs_the_argv() -> None:
    """argv goes to the program as it is: shell syntax in an argument is only text."""
    assert run_secret_command(["printf", "%s\\n", "$HOME;`id`"], what=WHAT,
                              environ={}) == "$HOME;`id`"


def test_non_zero_exit_names_status_and_first_stderr_line_only() -> None:
    """A non-zero exit is a TempFailure naming the program, the exit status and the first
    stderr line, never stdout nor the later stderr lines."""
    error = failure(f"echo {SECRET}; echo 'gpg: decryption failed: No secret key' >&2;"
                    " echo 'second line secret=hunter2' >&2; exit 3")
    assert "failed with exit status 3: gpg: decryption failed: No secret key" in str(error)
    assert "hunter2" not in str(error) and "second line" not in str(error)


def test_a_secret_echoed_on_stderr_is_hidden() -> None:
    """Should the first stderr line repeat the first stdout line, it is shown hidden."""
    error = failure(f"echo {SECRET}; echo 'bad: {SECRET}' >&2; exit 1")
    assert "bad: <secret hidden>" in str(error)


def test_a_signal_is_named() -> None:
    """A command killed by a signal is named so."""
    assert "killed by signal 9" in str(failure("kill -9 $$"))


def test_timeout_kills_the_command_and_its_children(tmp_path: Path) -> None:
    """A command that outlives the timeout is a TempFailure saying so, soon after it; its
    whole session (a child it started too) is killed."""
    pids = tmp_path / "pids"
    started = time.monotonic()
    error = failure(f"sleep 60 & echo $! > {pids}; echo parent >&2; wait", timeout=0.5)
    assert time.monotonic() - started < 5
    assert "did not finish within 0.5s and was killed: parent" in str(error)
    assert _state(int(pids.read_text())) in ("gone", "Z")


def _state(pid: int) -> str:
    """A process's state letter (Z: dead, not yet reaped by its new parent), or "gone"."""
    for _ in range(50):
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return "gone"
        if state == "Z":
            return state
        time.sleep(0.05)
    return state


def test_huge_output_is_cut_and_the_command_killed() -> None:
    """A command that prints without end is read up to MAX_OUTPUT octets, killed, and
    fails at once (long before the timeout)."""
    started = time.monotonic()
    error = failure(f"while :; do echo {SECRET}; done", timeout=20)
    assert time.monotonic() - started < 10
    assert f"printed more than {MAX_OUTPUT} octets and was killed" in str(error)


def test_endless_stderr_is_drained_and_the_secret_still_read() -> None:
    """A command that writes more than MAX_OUTPUT octets to stderr and succeeds still
    gives its secret (stderr is drained, only its start kept)."""
    assert run(f"head -c {MAX_OUTPUT * 4} /dev/zero >&2; echo {SECRET}") == SECRET


def test_a_child_holding_the_pipes_does_not_hold_us() -> None:
    """When the command exits but a child of it keeps stdout open, its answer is taken
    within a second or so, not at the timeout."""
    started = time.monotonic()
    assert run(f"echo {SECRET}; sleep 30 &", timeout=20) == SECRET
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("argv", [["no-such-program-xyz"], ["/nonexistent/bin/pw"]])
def test_missing_program(argv: list[str]) -> None:
    """A program that does not exist is a TempFailure naming it and the PATH searched."""
    with pytest.raises(TempFailure) as caught:
        run_secret_command(argv, what=WHAT, environ={})
    assert str(caught.value).startswith(f"{WHAT} {argv[0]}: no such program")
    assert COMMAND_PATH in str(caught.value)


def test_program_that_may_not_run(tmp_path: Path) -> None:
    """A program file without execute permission is a TempFailure saying so."""
    program = tmp_path / "pw"
    program.write_text("#!/bin/sh\necho x\n")
    program.chmod(0o600)
    with pytest.raises(TempFailure) as caught:
        run_secret_command([str(program)], what=WHAT, environ={})
    assert "permission denied" in str(caught.value)


@pytest.mark.parametrize("script", ["true", "echo; echo later", "printf '\\n'"])
def test_empty_first_line_is_a_failure(script: str) -> None:
    """A command that succeeds with nothing on its first line gives no password."""
    assert "printed no password on its first line" in str(failure(script))


def test_first_line_that_is_not_utf8() -> None:
    """A first line that is not UTF-8 is a failure that does not show it."""
    error = failure("printf 'abc\\377\\n'")
    assert "not UTF-8" in str(error) and "abc" not in str(error)


# -- password_file ----------------------------------------------------------------------


def test_password_file_first_line(tmp_path: Path) -> None:
    """The first line of a password_file, without CR LF, is the password."""
    path = tmp_path / "pw"
    path.write_bytes(SECRET.encode() + b"\r\nother\n")
    path.chmod(0o600)
    with capture_logs() as events:
        assert read_password_file(str(path), what="account a: password_file",
                                  log=structlog.get_logger()) == SECRET
    assert events == []


def test_world_readable_password_file_warns(tmp_path: Path) -> None:
    """A password_file that others may read is used, with one warning naming it, not the
    password."""
    path = tmp_path / "pw"
    path.write_text(SECRET + "\n")
    path.chmod(0o644)
    with capture_logs() as events:
        read_password_file(str(path), what="account a: password_file",
                           log=structlog.get_logger())
    assert [e["event"] for e in events] == [
        "password file is readable by everyone; restrict it (chmod 600)"]
    assert events[0]["path"] == str(path) and SECRET not in repr(events)


def _file_failure(path: Path) -> TempFailure:
    with pytest.raises(TempFailure) as caught:
        read_password_file(str(path), what="account a: password_file")
    assert SECRET not in str(caught.value)
    assert str(caught.value).startswith(f"account a: password_file {path}: ")
    return caught.value


def test_password_file_failures(tmp_path: Path) -> None:
    """Missing, a directory, a FIFO (without hanging), empty, too big, not UTF-8: each is a
    TempFailure naming the file and the account, never its content."""
    assert "cannot be opened" in str(_file_failure(tmp_path / "missing"))
    assert "not a regular file" in str(_file_failure(tmp_path))
    os.mkfifo(tmp_path / "fifo")
    assert "not a regular file" in str(_file_failure(tmp_path / "fifo"))
    empty = tmp_path / "empty"
    empty.write_text("\n" + SECRET + "\n")
    assert "first line is empty" in str(_file_failure(empty))
    big = tmp_path / "big"
    big.write_bytes(SECRET.encode() + b"\n" + b"x" * MAX_FILE_OCTETS)
    assert "too big" in str(_file_failure(big))
    latin = tmp_path / "latin"
    latin.write_bytes(SECRET.encode() + b"\xe9\n")
    assert "not UTF-8" in str(_file_failure(latin))


# -- secret_for and Secrets -------------------------------------------------------------------


def test_secret_for_each_source(tmp_path: Path) -> None:
    """password, password_file and password_command each give password Credentials with
    the account's login and forced mechanism; no log line shows the secret."""
    path = tmp_path / "pw"
    path.write_text(SECRET + "\n")
    path.chmod(0o600)
    accounts = [
        Account("a", "h", login="me", password=SECRET, auth="PLAIN"),
        Account("b", "h", login="me", password_file=str(path)),
        Account("c", "h", login="me", password_command=("printf", "%s\\n", SECRET)),
    ]
    with capture_logs() as events:
        found = [secret_for(account, log=structlog.get_logger()) for account in accounts]
    assert [(c.login, c.secret, c.kind, c.mechanism) for c in found if c] == [
        ("me", SECRET, "password", "PLAIN"), ("me", SECRET, "password", None),
        ("me", SECRET, "password", None)]
    assert SECRET not in repr(found) and SECRET not in repr(events)


def test_secret_for_without_login_is_no_auth() -> None:
    """An account without a login has no credentials: no AUTH."""
    assert secret_for(Account("relay", "h")) is None


def test_secret_for_oauth2_asks_the_token_source() -> None:
    """An OAuth2 account's secret is the access token its token source gives, kind oauth2;
    without a token source it is a bug, not a silent login without AUTH."""
    account = Account("o", "h", login="me@example.com", auth="XOAUTH2",
                      oauth2=OAuth2(token_command=("t",)))
    asked: list[str] = []

    def token(chosen: Account) -> str:
        asked.append(chosen.name)
        return SECRET

    credentials = secret_for(account, oauth2_token=token)
    assert credentials is not None and asked == ["o"]
    assert (credentials.secret, credentials.kind, credentials.mechanism) == (
        SECRET, "oauth2", "XOAUTH2")
    with pytest.raises(SoftwareError):
        secret_for(account)


def test_secret_for_a_failing_command_names_the_account() -> None:
    """A password_command that fails is a TempFailure naming account, key and program."""
    account = Account("fastmail", "h", login="me",
                      password_command=("sh", "-c", f"echo {SECRET}; exit 2"))
    with pytest.raises(TempFailure) as caught:
        secret_for(account)
    assert str(caught.value).startswith(
        "account fastmail: password_command sh: failed with exit status 2")
    assert SECRET not in str(caught.value)


def test_secrets_runs_each_command_once_per_run(tmp_path: Path) -> None:
    """Secrets runs an account's password_command once however often it is asked, and a
    failure once too (asking again raises the same TempFailure without running it)."""
    runs = tmp_path / "runs"
    good = Account("good", "h", login="me", password_command=(
        "sh", "-c", f"echo good >> {runs}; echo {SECRET}"))
    bad = Account("bad", "h", login="me", password_command=(
        "sh", "-c", f"echo bad >> {runs}; echo oops >&2; exit 1"))
    secrets = Secrets()
    for _ in range(3):
        credentials = secrets.credentials(good)
        assert credentials is not None and credentials.secret == SECRET
        with pytest.raises(TempFailure, match="exit status 1: oops"):
            secrets.credentials(bad)
    assert sorted(runs.read_text().split()) == ["bad", "good"]
