"""The sendmail-compatible command line parser (SPEC 1)."""

from __future__ import annotations

import pytest

from dma.core import sysexits
from dma.core.cmdline import (
    DEFAULT_PERSISTENT_INTERVAL,
    Invocation,
    Mode,
    QueueSelector,
    parse_command_line,
)
from dma.core.errors import UsageError


def parse(*words: str) -> Invocation:
    """Parse ``dma`` followed by ``words``."""
    return parse_command_line(["dma", *words])


def usage_error(*argv: str) -> UsageError:
    """Parse ``argv`` (argv[0] included) and return the UsageError it must raise."""
    with pytest.raises(UsageError) as caught:
        parse_command_line(list(argv))
    assert caught.value.exit_code == sysexits.EX_USAGE
    assert "\n" not in str(caught.value)
    return caught.value


# --- defaults and program names ---------------------------------------------------------


def test_plain_recipients_send_with_defaults() -> None:
    """Positional words are recipients of a normal submission with every default."""
    assert parse("a@example.org", "bob") == Invocation(
        program="dma", mode=Mode.SEND, recipients=("a@example.org", "bob")
    )


def test_empty_argv_is_dma_without_arguments() -> None:
    """An empty argv (possible through execve) parses as dma with no arguments."""
    assert parse_command_line([]) == Invocation()


@pytest.mark.parametrize(
    ("argv0", "program"),
    [
        ("sendmail", "sendmail"),
        ("/usr/sbin/sendmail", "sendmail"),
        ("/usr/lib/dma/dma", "dma"),
        ("./sendmail/", "sendmail"),
        ("", "dma"),
    ],
)
def test_program_is_basename_of_argv0(argv0: str, program: str) -> None:
    """The program name is the basename of argv[0], as C basename() computes it."""
    assert parse_command_line([argv0, "x@y"]).program == program


def test_program_name_with_control_characters_is_escaped() -> None:
    """A hostile argv[0] cannot put a line break into the program name used in messages."""
    inv = parse_command_line(["evil\nname", "x@y"])
    assert "\n" not in inv.program
    assert inv.program == "evil\\nname"


@pytest.mark.parametrize("argv0", ["mailq", "/usr/bin/mailq", "/usr/local/bin/mailq"])
def test_mailq_name_lists_the_queue(argv0: str) -> None:
    """Invoked as mailq (also by full path) dma lists the queue."""
    assert parse_command_line([argv0]) == Invocation(program="mailq", mode=Mode.LIST_QUEUE)


def test_mailq_accepts_json_verbose_and_config() -> None:
    """mailq takes -j, -v and -C FILE, clustered or not."""
    inv = parse_command_line(["mailq", "-vj", "-C", "/etc/dma/other.conf"])
    assert (inv.mode, inv.json, inv.verbose, inv.config_path) == (
        Mode.LIST_QUEUE,
        True,
        True,
        "/etc/dma/other.conf",
    )
    assert parse_command_line(["mailq", "-C/x.conf"]).config_path == "/x.conf"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-t"], "invalid option -t"),
        (["-bp"], "invalid option -b"),
        (["root"], "mailq takes no arguments: root"),
        (["--", "-v"], "mailq takes no arguments: -v"),
    ],
)
def test_mailq_rejects_everything_else(args: list[str], message: str) -> None:
    """mailq refuses any option but -j, -v, -C, and any positional word."""
    error = usage_error("mailq", *args)
    assert error.message == message
    assert error.hint is not None and "-j" in error.hint


def test_mailq_config_option_needs_a_value() -> None:
    """mailq with a trailing -C is a usage error."""
    assert usage_error("mailq", "-C").message == "option -C needs an argument"


@pytest.mark.parametrize("argv0", ["newaliases", "/usr/bin/newaliases"])
def test_newaliases_name_ignores_other_arguments(argv0: str) -> None:
    """Invoked as newaliases dma checks the aliases and ignores unknown arguments."""
    inv = parse_command_line([argv0, "-Z", "-bp", "root", "-q"])
    assert inv == Invocation(program="newaliases", mode=Mode.NEWALIASES)


def test_newaliases_honours_config_option() -> None:
    """newaliases still reads -C FILE, separate or attached, and stops at --."""
    assert parse_command_line(["newaliases", "-v", "-C", "/a.conf"]).config_path == "/a.conf"
    assert parse_command_line(["newaliases", "-C/b.conf"]).config_path == "/b.conf"
    assert parse_command_line(["newaliases", "--", "-C/c.conf"]).config_path is None


def test_newaliases_config_option_needs_a_value() -> None:
    """newaliases with a trailing -C is a usage error, not a silent default."""
    assert usage_error("newaliases", "-C").message == "option -C needs an argument"


# --- the flags of the SPEC table --------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "field", "value"),
    [
        (["-t"], "headers_recipients", True),
        (["-i"], "ignore_dots", True),
        (["-oi"], "ignore_dots", True),
        (["-o", "i"], "ignore_dots", True),
        (["-oiTrue"], "ignore_dots", True),
        (["-i", "-oiFalse"], "ignore_dots", False),
        (["-D"], "foreground", True),
        (["-v"], "verbose", True),
        (["-F", "Cron Daemon"], "full_name", "Cron Daemon"),
        (["-FCronDaemon"], "full_name", "CronDaemon"),
        (["-L", "dma-cron"], "syslog_tag", "dma-cron"),
        (["-Lapp"], "syslog_tag", "app"),
        (["-C", "/etc/x.conf"], "config_path", "/etc/x.conf"),
        (["-N", "never"], "dsn_notify", "NEVER"),
        (["-N", "failure, Delay"], "dsn_notify", "FAILURE,DELAY"),
        (["-Nsuccess,success"], "dsn_notify", "SUCCESS"),
        (["-R", "hdrs"], "dsn_ret", "HDRS"),
        (["-RFULL"], "dsn_ret", "FULL"),
        (["-V", "abc+123"], "dsn_envid", "abc+123"),
        (["-B", "7bit"], "body_type", "7BIT"),
        (["-B8BITMIME"], "body_type", "8BITMIME"),
    ],
)
def test_option_sets_its_field(args: list[str], field: str, value: object) -> None:
    """Each value option of the SPEC table lands in its Invocation field, normalised."""
    inv = parse(*args, "rcpt@example.org")
    assert getattr(inv, field) == value
    assert inv.mode is Mode.SEND
    assert inv.recipients == ("rcpt@example.org",)


@pytest.mark.parametrize(
    ("args", "sender"),
    [
        (["-f", "a@example.org"], "a@example.org"),
        (["-fa@example.org"], "a@example.org"),
        (["-f", "<a@example.org>"], "a@example.org"),
        (["-r", "<a@example.org>"], "a@example.org"),
        (["-f", " <a@example.org> "], "a@example.org"),
        (["-f", "<>"], ""),
        (["-f", ""], ""),
        (["-f<>"], ""),
        (["-f", "<<a@b>>"], "<a@b>"),
        (["-f", "<a@b"], "<a@b"),
        (["-f", "first@x", "-r", "last@x"], "last@x"),
    ],
)
def test_sender_is_unwrapped(args: list[str], sender: str) -> None:
    """-f and -r unwrap one pair of angle brackets, <> or empty is the null sender, last wins."""
    assert parse(*args, "x@y").sender == sender


def test_sender_absent_is_none() -> None:
    """Without -f or -r the sender is None, distinct from the null sender."""
    assert parse("x@y").sender is None


@pytest.mark.parametrize(
    ("args", "mode", "json", "queue_only"),
    [
        (["-bp"], Mode.LIST_QUEUE, False, False),
        (["-bj"], Mode.LIST_QUEUE, True, False),
        (["-bp", "-bj"], Mode.LIST_QUEUE, True, False),
        (["-b", "p"], Mode.LIST_QUEUE, False, False),
        (["-bq", "x@y"], Mode.SEND, False, True),
        (["-bs"], Mode.SMTP_SESSION, False, False),
        (["-bv", "x@y"], Mode.VERIFY, False, False),
        (["-bm", "x@y"], Mode.SEND, False, False),
        (["-bm", "-bq", "x@y"], Mode.SEND, False, True),
        (["-bi"], Mode.NEWALIASES, False, False),
    ],
)
def test_b_mode_letters(args: list[str], mode: str, json: bool, queue_only: bool) -> None:
    """Each -b letter selects its mode, JSON listing or spool-only submission."""
    inv = parse(*args)
    assert (inv.mode, inv.json, inv.queue_only) == (mode, json, queue_only)


def test_bd_says_dma_never_listens() -> None:
    """-bd is refused with a message saying dma has no listening daemon."""
    error = usage_error("dma", "-bd")
    assert "never listens on a port" in error.message
    assert error.hint is not None and "-bs" in error.hint


@pytest.mark.parametrize("args", [["-bx"], ["-bpx"], ["-b", ""], ["-bP"]])
def test_unknown_b_mode(args: list[str]) -> None:
    """Any -b value other than one known mode letter is a usage error naming it."""
    error = usage_error("dma", *args)
    assert error.message.startswith("unknown mode -b")
    assert error.message == f"unknown mode -b{args[-1].removeprefix('-b')}"


@pytest.mark.parametrize(
    "args",
    [
        ["-Ac"],
        ["-A", "m"],
        ["-o", "em"],
        ["-oem"],
        ["-odb"],
        ["-odi"],
        ["-O", "DeliveryMode=b"],
        ["-OQueueDirectory=/tmp"],
        ["-n"],
        ["-U"],
        ["-h", "17"],
        ["-h17"],
        ["-d", "0.1"],
        ["-X", "/tmp/log"],
    ],
)
def test_compatibility_options_are_ignored(args: list[str]) -> None:
    """The sendmail options dma ignores parse and change nothing in the result."""
    assert parse(*args, "x@y") == parse("x@y")


@pytest.mark.parametrize("value", ["p", "q", "x", ""])
def test_a_with_other_value_is_rejected(value: str) -> None:
    """-A accepts only c and m; the C dma's fall-through to -b is not reproduced."""
    assert usage_error("dma", "-A", value, "x@y").message == f"invalid value for -A: '{value}'"


def test_cron_line_parses() -> None:
    """The arguments cron passes to sendmail parse into a send with full name and 8BITMIME."""
    inv = parse_command_line(
        ["/usr/sbin/sendmail", "-FCronDaemon", "-i", "-B8BITMIME", "-oem", "root"]
    )
    assert inv == Invocation(
        program="sendmail",
        recipients=("root",),
        full_name="CronDaemon",
        ignore_dots=True,
        body_type="8BITMIME",
    )


# --- clustering, attached and separate arguments, permutation, -- ------------------------


def test_flags_cluster() -> None:
    """Flags without arguments may be clustered in one word."""
    inv = parse("-tiDv")
    assert (inv.headers_recipients, inv.ignore_dots, inv.foreground, inv.verbose) == (
        True,
        True,
        True,
        True,
    )


def test_cluster_ending_in_option_takes_next_word() -> None:
    """An argument-taking option at the end of a cluster takes the next word."""
    inv = parse("-tif", "a@b", "x@y")
    assert (inv.headers_recipients, inv.ignore_dots, inv.sender, inv.recipients) == (
        True,
        True,
        "a@b",
        ("x@y",),
    )


def test_cluster_option_takes_rest_of_word() -> None:
    """An argument-taking option inside a cluster takes the rest of the word."""
    inv = parse("-tfa@b", "x@y")
    assert (inv.headers_recipients, inv.sender, inv.recipients) == (True, "a@b", ("x@y",))


def test_separate_argument_may_start_with_dash() -> None:
    """Like getopt, a separate option argument is taken verbatim even when it starts with -."""
    assert parse("-F", "-weird-", "x@y").full_name == "-weird-"


def test_options_after_recipients_are_options() -> None:
    """Options may follow recipients (glibc getopt permutes)."""
    inv = parse("x@y", "-t", "z@w", "-f", "s@t")
    assert (inv.recipients, inv.headers_recipients, inv.sender) == (("x@y", "z@w"), True, "s@t")


def test_double_dash_ends_options() -> None:
    """After -- every word is a recipient, even one that looks like an option."""
    inv = parse("-t", "--", "-i", "--", "x@y")
    assert (inv.headers_recipients, inv.ignore_dots) == (True, False)
    assert inv.recipients == ("-i", "--", "x@y")


def test_lone_dash_is_a_word() -> None:
    """A single - is a positional word, as in getopt."""
    assert parse("-", "x@y").recipients == ("-", "x@y")


# --- -q --------------------------------------------------------------------------------


def test_q_alone_runs_once() -> None:
    """-q alone is a single queue run without an interval."""
    assert parse("-q") == Invocation(mode=Mode.RUN_QUEUE)


@pytest.mark.parametrize(("word", "seconds"), [("-q30m", 1800), ("-q1h", 3600), ("-q90", 90)])
def test_q_with_attached_time_sets_interval(word: str, seconds: int) -> None:
    """An attached time after -q is the interval of a persistent queue runner."""
    inv = parse(word)
    assert (inv.mode, inv.queue_interval) == (Mode.RUN_QUEUE, seconds)


def test_q_never_eats_the_next_word() -> None:
    """Unlike the C dma, -q does not take the next word, so -q addr is an error, not a run."""
    error = usage_error("dma", "-q", "30m")
    assert error.message.startswith("sending mail and queue operations are mutually exclusive")


def test_q_followed_by_option_keeps_option() -> None:
    """-q -v is a verbose queue run."""
    inv = parse("-q", "-v")
    assert (inv.mode, inv.verbose, inv.queue_interval) == (Mode.RUN_QUEUE, True, None)


def test_q_at_end_of_cluster_has_no_interval() -> None:
    """-vq is -v then a bare -q."""
    assert parse("-vq") == Invocation(mode=Mode.RUN_QUEUE, verbose=True)


@pytest.mark.parametrize("word", ["-qx", "-q0", "-q5x", "-q" + "9" * 40, "-q\u0663"])
def test_q_with_bad_time(word: str) -> None:
    """A -q time that is not a positive duration is a usage error naming it."""
    assert usage_error("dma", word).message.startswith(f"invalid queue interval {word[:30]}")


def test_q_interval_over_thirty_days_is_rejected() -> None:
    """An interval over thirty days is refused as a likely typo."""
    assert "longer than 30 days" in usage_error("dma", "-q31d").message
    assert parse("-q30d").queue_interval == 30 * 86400


def test_q_selectors_attached_separate_and_repeated() -> None:
    """-qI, -qR, -qS add selectors, attached or separate, in order, and may repeat."""
    inv = parse("-qI", "20ca94", "-qRbob@example.org", "-qS", "alice", "-qIabc")
    assert inv.mode is Mode.RUN_QUEUE
    assert inv.selectors == (
        QueueSelector("id", "20ca94"),
        QueueSelector("recipient", "bob@example.org"),
        QueueSelector("sender", "alice"),
        QueueSelector("id", "abc"),
    )


def test_q_selector_with_interval() -> None:
    """Selectors and an interval combine into one queue run."""
    inv = parse("-q5m", "-qSroot")
    assert (inv.queue_interval, inv.selectors) == (300, (QueueSelector("sender", "root"),))


def test_q_selector_needs_argument() -> None:
    """-qI at the end of argv, or with an empty argument, is a usage error."""
    assert usage_error("dma", "-qI").message == "option -qI needs an argument"
    assert usage_error("dma", "-qR", "").message == "option -qR needs a non-empty argument"


def test_qf_is_a_queue_run_in_the_foreground() -> None:
    """-qf (sendmail: run the queue once, in the foreground) is a single run, no interval."""
    inv = parse("-qf")
    assert (inv.mode, inv.queue_interval, inv.foreground) == (Mode.RUN_QUEUE, None, True)
    assert parse("-v", "-qf").verbose


def test_qp_is_a_persistent_runner_with_a_default_interval() -> None:
    """-qpTIME is -qTIME; -qp alone runs every DEFAULT_PERSISTENT_INTERVAL (one minute)."""
    assert parse("-qp30m").queue_interval == 1800
    assert parse("-qp").queue_interval == DEFAULT_PERSISTENT_INTERVAL == 60
    assert parse("-qp", "-qSroot").selectors == (QueueSelector("sender", "root"),)


@pytest.mark.parametrize("word", ["-qpx", "-qp0", "-qfx", "-qf5m"])
def test_qp_and_qf_with_bad_values(word: str) -> None:
    """A bad time after -qp, or anything after -qf, is a usage error naming the word."""
    assert usage_error("dma", word).message.startswith(f"invalid queue interval {word}")


def test_negated_selectors_are_accepted() -> None:
    """-q!I S, -q!R S and -q!S S (attached or separate) select the items that do NOT
    contain S, as in sendmail."""
    inv = parse("-q!I", "20ca94", "-q!Rbob@x", "-qS", "alice")
    assert inv.mode is Mode.RUN_QUEUE
    assert inv.selectors == (
        QueueSelector("id", "20ca94", negate=True),
        QueueSelector("recipient", "bob@x", negate=True),
        QueueSelector("sender", "alice"),
    )


def test_bang_only_before_a_selector_letter() -> None:
    """-q! without I, R or S after it is a usage error that says where ! goes."""
    for word in ("-q!", "-q!30m", "-q!f"):
        error = usage_error("dma", word)
        assert "-q!" in error.message and error.hint is not None and "-q!R" in error.hint
    assert usage_error("dma", "-q!R").message == "option -q!R needs an argument"


# --- queue management -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("letter", "mode"), [("d", Mode.DELETE), ("b", Mode.BOUNCE), ("r", Mode.RELEASE)]
)
def test_queue_management_takes_ids(letter: str, mode: str) -> None:
    """-Qd, -Qb and -Qr take item ids or message ids as positional words."""
    inv = parse(f"-Q{letter}", "20ca94.556f80fe16e0", "1a2b")
    assert (inv.mode, inv.recipients) == (mode, ("20ca94.556f80fe16e0", "1a2b"))
    assert parse("-Q", letter, "abc.1").mode is mode


def test_delete_all() -> None:
    """-Qd ALL deletes every item."""
    assert parse("-Qd", "ALL") == Invocation(mode=Mode.DELETE, recipients=("ALL",))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-Qd"], "-Qd needs at least one queue id"),
        (["-Qb"], "-Qb needs at least one queue id"),
        (["-Qd", "ALL", "abc.1"], "-Qd ALL takes no other ids"),
        (["-Qb", "ALL"], "-Qb ALL is not supported"),
        (["-Qr"], "-Qr needs at least one queue id"),
        (["-Qr", "ALL"], "-Qr ALL is not supported"),
        (["-Qr", "../x"], "invalid queue id '../x'"),
        (["-Qd", "../etc/passwd"], "invalid queue id '../etc/passwd'"),
        (["-Qd", "a/b"], "invalid queue id 'a/b'"),
        (["-Qd", "abc..1"], "invalid queue id 'abc..1'"),
        (["-Qx", "abc"], "unknown queue operation -Qx"),
        (["-Q"], "option -Q needs an argument"),
    ],
)
def test_queue_management_errors(args: list[str], message: str) -> None:
    """Queue management without ids, with unsafe ids or an unknown letter is a usage error."""
    assert usage_error("dma", *args).message == message


# --- conflicts ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [["-bp", "x@y"], ["x@y", "-bp"], ["-bj", "x@y"], ["-q", "x@y"], ["-q30m", "x@y"]],
)
def test_recipients_with_queue_listing_or_run(args: list[str]) -> None:
    """Recipients together with -bp or -q are refused, as in the C dma."""
    error = usage_error("dma", *args)
    assert error.message.startswith("sending mail and queue operations are mutually exclusive")


@pytest.mark.parametrize(
    ("args", "pair"),
    [
        (["-bp", "-q"], "-bp and -q"),
        (["-q", "-bp"], "-q and -bp"),
        (["-q", "-Qd", "abc"], "-q and -Qd"),
        (["-Qd", "-Qb", "abc"], "-Qd and -Qb"),
        (["-bj", "-Qb", "abc"], "-bj and -Qb"),
        (["-Qr", "-Qd", "abc"], "-Qr and -Qd"),
        (["-qf", "-Qr", "abc"], "-q and -Qr"),
    ],
)
def test_two_queue_operations_conflict(args: list[str], pair: str) -> None:
    """Two different queue operations are refused, naming both."""
    assert usage_error("dma", *args).message == f"conflicting queue operations: {pair}"


@pytest.mark.parametrize(
    ("args", "pair"),
    [
        (["-bs", "-q"], "-bs and -q"),
        (["-Qd", "-bq", "a.1"], "-Qd and -bq"),
        (["-bv", "-bp"], "-bv and -bp"),
    ],
)
def test_send_mode_with_queue_operation(args: list[str], pair: str) -> None:
    """A sending mode together with a queue operation is refused, naming both."""
    error = usage_error("dma", *args)
    assert error.message == f"sending mail and queue operations are mutually exclusive: {pair}"


def test_two_send_modes_conflict() -> None:
    """Two different non-queue modes are refused rather than the last one silently winning."""
    assert usage_error("dma", "-bs", "-bv", "x@y").message == "conflicting modes: -bs and -bv"


def test_repeated_mode_is_fine() -> None:
    """Giving the same mode twice is not a conflict."""
    assert parse("-bp", "-bp").mode is Mode.LIST_QUEUE
    assert parse("-q", "-q5m").queue_interval == 300


@pytest.mark.parametrize(("mode", "word"), [("-bs", "x@y"), ("-bi", "x@y")])
def test_session_and_newaliases_take_no_words(mode: str, word: str) -> None:
    """-bs and -bi refuse positional words."""
    assert usage_error("dma", mode, word).message == f"{mode} takes no arguments: {word}"


def test_verify_needs_an_address() -> None:
    """-bv without an address is a usage error."""
    assert usage_error("dma", "-bv").message == "-bv needs at least one address"


# --- errors -------------------------------------------------------------------------------


def test_invalid_option_message_and_hint() -> None:
    """An unknown letter is named in the message, with a hint pointing to the manual."""
    error = usage_error("dma", "-tZ")
    assert error.message == "invalid option -Z"
    assert error.hint == "see 'man dma'; sendmail options -t -i -f ... are accepted"
    assert str(error) == f"invalid option -Z ({error.hint})"


def test_invalid_unprintable_option_is_escaped() -> None:
    """An unknown unprintable option letter is shown escaped, keeping the message one line."""
    assert usage_error("dma", "-\x1b").message == "invalid option -\\x1b"


@pytest.mark.parametrize("letter", list("AbBCdfFhLNoOQrRVX"))
def test_missing_argument(letter: str) -> None:
    """Every argument-taking option at the end of argv says it needs an argument."""
    error = usage_error("dma", "x@y", f"-{letter}")
    assert error.message == f"option -{letter} needs an argument"
    assert error.hint == f"write -{letter} VALUE or -{letter}VALUE"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-N", "sometimes"], "invalid value for -N: 'sometimes'"),
        (["-N", "never,delay"], "invalid value for -N: 'never,delay'"),
        (["-N", ""], "invalid value for -N: ''"),
        (["-R", "body"], "invalid value for -R: 'body'"),
        (["-B", "BINARYMIME"], "invalid value for -B: 'BINARYMIME'"),
        (["-V", "has space"], "invalid envelope id for -V: 'has space'"),
        (["-V", "x" * 101], "invalid envelope id for -V: '" + "x" * 57 + "...'"),
        # 34 characters, but 102 once xtext-encoded for ENVID=: what SMTP cannot carry
        (["-V", "+" * 34], "invalid envelope id for -V: '" + "+" * 34 + "'"),
        (["-L", ""], "invalid syslog tag for -L: ''"),
        (["-C", ""], "option -C needs a file name"),
    ],
)
def test_bad_option_values(args: list[str], message: str) -> None:
    """Values outside what an option allows are usage errors quoting the value."""
    assert usage_error("dma", *args, "x@y").message == message


@pytest.mark.parametrize(
    "args",
    [
        ["a@b\r\nBcc: victim@x"],
        ["-f", "a@b\nX: y", "x@y"],
        ["-Fname\r", "x@y"],
        ["-L", "tag\0", "x@y"],
        ["-o", "em\n", "x@y"],
        ["-qI", "a\nb"],
        ["--", "x@y\0"],
    ],
)
def test_line_breaks_and_nul_are_refused(args: list[str]) -> None:
    """CR, LF or NUL in any option argument or recipient is a usage error (header injection)."""
    error = usage_error("dma", *args)
    assert "contains a line break or NUL" in error.message
    assert "\r" not in str(error) and "\0" not in str(error)


def test_octets_that_are_not_utf8_are_shown_as_the_log_shows_them() -> None:
    """A -L tag holding a Latin-1 octet (argv read with surrogateescape) is named in the
    usage error as \\xe9, the form of every log line, not as a lone surrogate."""
    assert usage_error("dma", "-L", "t\udce9g", "x@y").message == (
        "invalid syslog tag for -L: 't\\xe9g'")
