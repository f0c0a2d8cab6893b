"""The sendmail-compatible command line: argv in, an ``Invocation`` value out (SPEC 1).

Not argparse: sendmail users cluster flags (``-ti``, ``-tif a@b``), attach option
arguments (``-fa@b``, ``-FCronDaemon``) and rely on ``-q`` taking only an attached
argument, none of which argparse can express.  The scanner here is getopt with the
option table of the C dma plus our own ``-Q``, and it permutes like glibc's getopt:
a word that starts with ``-`` is an option wherever it stands, also after recipients
(``sendmail a@b -t`` works); ``--`` ends the options, so a recipient that starts with
``-`` must follow it.  A lone ``-`` is an ordinary word.

The invocation name picks the grammar: ``mailq`` lists the queue and accepts only
``-j``, ``-v`` and ``-C FILE``; ``newaliases`` reads only ``-C FILE`` and ignores the
rest, as the C dma does; every other name parses the full sendmail option set.

``--help`` (the one long option; sendmail's ``-h`` is the hop count) asks for the
option summary of core/manual.py under every name.  It counts where getopt would
see an option: ``--`` before it, or an option that takes it as its value
(``-f --help``), makes it an ordinary word.

Where sendmail and the C dma disagree with safety we do not follow them: ``-q`` never
eats the next word, a recipient beside ``-bp`` or ``-q`` is an error, and a CR, LF or
NUL in any argument is refused before it can reach a header or a queue file.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

from dma.core.errors import DataError, UsageError
from dma.core.octets import printable
from dma.core.values import field, frozen, mutable

TYPE_CHECKING = False  # not typing's: a submission need not import typing (issue 2)
if TYPE_CHECKING:
    from typing import Final, Literal

    SelectorKind = Literal["id", "recipient", "sender"]
    # How an option letter takes its argument; "queue" is -q's: an attached time, f,
    # p[TIME], or [!]I/R/S then a selector.
    Arity = Literal["flag", "required", "queue"]
    ModeName = Literal["send", "list-queue", "run-queue", "smtp-session", "verify",
                       "newaliases", "delete", "bounce", "release", "help"]


class Mode:
    """What this run of dma is asked to do; exactly one per invocation.

    The names of the modes as constants of a ``ModeName`` (a Literal), not an Enum:
    importing ``enum`` and making an Enum class cost ~2.5 ms of every submission.
    """

    SEND: Final = "send"
    LIST_QUEUE: Final = "list-queue"
    RUN_QUEUE: Final = "run-queue"
    SMTP_SESSION: Final = "smtp-session"
    VERIFY: Final = "verify"
    NEWALIASES: Final = "newaliases"
    DELETE: Final = "delete"
    BOUNCE: Final = "bounce"
    RELEASE: Final = "release"
    HELP: Final = "help"


@frozen
class QueueSelector:
    """Restricts a queue run to items whose id, recipient or sender contains ``text``
    (does not contain it, with ``negate``: sendmail's ``-q!R text``)."""

    kind: SelectorKind
    text: str
    negate: bool = False


@frozen
class Invocation:
    """Everything the shell needs from argv; it only executes this value."""

    program: str = "dma"
    mode: ModeName = Mode.SEND
    recipients: tuple[str, ...] = ()
    sender: str | None = None
    full_name: str | None = None
    headers_recipients: bool = False
    ignore_dots: bool = False
    queue_only: bool = False
    foreground: bool = False
    verbose: bool = False
    queue_interval: int | None = None
    selectors: tuple[QueueSelector, ...] = ()
    json: bool = False
    syslog_tag: str = "dma"
    config_path: str | None = None
    dsn_notify: str | None = None
    dsn_ret: str | None = None
    dsn_envid: str | None = None
    body_type: str | None = None


# The word that asks -Qd to delete every item in the queue.
DELETE_ALL = "ALL"

# The one long option: print the option summary (core/manual.help_text) and exit 0.
HELP_OPTION = "--help"

# A queue run interval longer than this is surely a typo (and would overflow sleep()).
MAX_QUEUE_INTERVAL = 30 * 86400

# -qp without a time.  sendmail's persistent runner sleeps 1 second between runs; ours
# lists and reads every Q file each pass and honours each item's next-try time, so a
# minute is precise enough and keeps an idle runner idle.
DEFAULT_PERSISTENT_INTERVAL = 60

_HINT = "see 'man dma'; sendmail options -t -i -f ... are accepted"
_MAILQ_HINT = "mailq accepts only -j (JSON lines), -v and -C FILE"
_QUEUE_OPERATIONS = frozenset(
    {Mode.LIST_QUEUE, Mode.RUN_QUEUE, Mode.DELETE, Mode.BOUNCE, Mode.RELEASE}
)
_SELECTOR_KINDS: Mapping[str, SelectorKind] = {"I": "id", "R": "recipient", "S": "sender"}

# -b letter -> (mode, json, queue_only)
_B_MODES: Mapping[str, tuple[ModeName, bool, bool]] = {
    "p": (Mode.LIST_QUEUE, False, False),
    "j": (Mode.LIST_QUEUE, True, False),
    "q": (Mode.SEND, False, True),
    "s": (Mode.SMTP_SESSION, False, False),
    "v": (Mode.VERIFY, False, False),
    "m": (Mode.SEND, False, False),
    "i": (Mode.NEWALIASES, False, False),
}
_Q_MODES: Mapping[str, ModeName] = {"d": Mode.DELETE, "b": Mode.BOUNCE, "r": Mode.RELEASE}

_DSN_RET_WORDS = ("FULL", "HDRS")
_BODY_TYPES = ("7BIT", "8BITMIME")
_FORBIDDEN = ("\r", "\n", "\0")


_FULL_TABLE: Mapping[str, Arity] = {
    **dict.fromkeys("DintUv", "flag"),
    **dict.fromkeys("AbBCdfFhLNoOQrRVX", "required"),
    "q": "queue",
}
_MAILQ_TABLE: Mapping[str, Arity] = {"j": "flag", "v": "flag", "C": "required"}


def parse_command_line(argv: Sequence[str]) -> Invocation:
    """Turn ``argv`` (``argv[0]`` included) into an Invocation, or raise UsageError.

    The program name decides the grammar (module docstring); an empty argv is
    ``dma`` with no arguments.
    """
    program = _program_name(argv[0] if argv else "")
    words = tuple(argv[1:])
    if program == "mailq":
        return _parse_mailq(program, words)
    if program == "newaliases":
        return _parse_newaliases(program, words)
    return _parse_full(program, words)


# --- scanning: words -> options and positional words -----------------------------------


@frozen
class _Option:
    """One option as given: ``spelled`` is how messages name it (``-f``, ``-qI``)."""

    letter: str
    value: str | None
    spelled: str


@frozen
class _Word:
    """A positional word: a recipient, or a queue id for -Qd/-Qb."""

    text: str


def _scan(
    words: Sequence[str], table: Mapping[str, Arity], hint: str
) -> Iterator[_Option | _Word]:
    """Yield options and words in argv order, getopt style with permutation."""
    index = 0
    while index < len(words):
        word = words[index]
        index += 1
        if word == "--":
            for rest in words[index:]:
                yield _Word(_checked(rest, "argument"))
            return
        if word.startswith("--"):
            if word != HELP_OPTION:
                raise UsageError(f"invalid option {_show(word)}", hint=hint)
            yield _Option(word, None, word)
            continue
        if len(word) < 2 or not word.startswith("-"):
            yield _Word(_checked(word, "argument"))
            continue
        position = 1
        while position < len(word):
            letter = word[position]
            position += 1
            arity = table.get(letter)
            if arity is None:
                raise UsageError(f"invalid option -{_show(letter)}", hint=hint)
            if arity == "flag":
                yield _Option(letter, None, f"-{letter}")
                continue
            attached = word[position:]
            if arity == "queue":
                negate = attached[:1] == "!"
                kind = attached[1:2] if negate else attached[:1]
                if kind not in _SELECTOR_KINDS:
                    if negate:
                        raise UsageError(
                            f"-q{_show(attached)}: ! goes only before I, R or S",
                            hint="-q!I S, -q!R S, -q!S S skip the items that contain S",
                        )
                    # -q never takes the next word: only an attached interval.
                    yield _Option(letter, _checked(attached, "-q") if attached else None, "-q")
                    break
                spelled = f"-q{'!' if negate else ''}{kind}"
                attached = attached[1 + negate:]
            else:
                spelled = f"-{letter}"
            if attached:
                value = attached
            elif index < len(words):
                value = words[index]
                index += 1
            else:
                raise UsageError(
                    f"option {spelled} needs an argument",
                    hint=f"write {spelled} VALUE or {spelled}VALUE",
                )
            yield _Option(letter, _checked(value, f"option {spelled}"), spelled)
            break


def _checked(text: str, what: str) -> str:
    """Return ``text`` unless it holds CR, LF or NUL, which could inject headers."""
    if any(bad in text for bad in _FORBIDDEN):
        raise UsageError(
            f"{what} contains a line break or NUL: {_show(text)}",
            hint="each argument must be a single line",
        )
    return text


def _show(text: str, limit: int = 60) -> str:
    """Render user text for a one-line message: escaped if unprintable, shortened."""
    shown = printable(text)
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


def _program_name(argv0: str) -> str:
    """Basename of argv[0] as C basename() gives it; escaped, since argv[0] is anyone's."""
    name = argv0.rstrip("/").rsplit("/", 1)[-1]
    return _show(name, limit=100) if name else "dma"


# --- the three grammars -------------------------------------------------------------------


def _parse_mailq(program: str, words: Sequence[str]) -> Invocation:
    """``mailq [-j] [-v] [-C FILE]``: the queue listing and nothing else."""
    json = verbose = False
    config_path: str | None = None
    for item in _scan(words, _MAILQ_TABLE, _MAILQ_HINT):
        if isinstance(item, _Word):
            raise UsageError(f"mailq takes no arguments: {_show(item.text)}", hint=_MAILQ_HINT)
        if item.letter == HELP_OPTION:
            return Invocation(program=program, mode=Mode.HELP)
        if item.letter == "j":
            json = True
        elif item.letter == "v":
            verbose = True
        else:
            config_path = _config_path(item)
    return Invocation(
        program=program, mode=Mode.LIST_QUEUE, json=json, verbose=verbose, config_path=config_path
    )


def _parse_newaliases(program: str, words: Sequence[str]) -> Invocation:
    """``newaliases [-C FILE]``: every other argument is ignored, like the C dma."""
    config_path: str | None = None
    index = 0
    while index < len(words):
        word = words[index]
        index += 1
        if word == "--":
            break
        if word == HELP_OPTION:
            return Invocation(program=program, mode=Mode.HELP)
        if not word.startswith("-C"):
            continue
        value = word[2:]
        if not value:
            if index >= len(words):
                raise UsageError("option -C needs an argument", hint="write -C FILE or -CFILE")
            value = words[index]
            index += 1
        config_path = _config_path(_Option("C", _checked(value, "option -C"), "-C"))
    return Invocation(program=program, mode=Mode.NEWALIASES, config_path=config_path)


@mutable
class _Draft:
    """The mutable state of one full parse; frozen into an Invocation at the end."""

    mode: ModeName | None = None
    mode_spelled: str = ""
    words: list[str] = field(default_factory=list)
    sender: str | None = None
    full_name: str | None = None
    headers_recipients: bool = False
    ignore_dots: bool = False
    queue_only: bool = False
    foreground: bool = False
    verbose: bool = False
    queue_interval: int | None = None
    selectors: list[QueueSelector] = field(default_factory=list)
    json: bool = False
    syslog_tag: str = "dma"
    config_path: str | None = None
    dsn_notify: str | None = None
    dsn_ret: str | None = None
    dsn_envid: str | None = None
    body_type: str | None = None

    def request(self, mode: ModeName, spelled: str) -> None:
        """Record the mode ``spelled`` asks for; a different earlier one is a conflict."""
        if self.mode is None or self.mode is mode:
            if self.mode is None:
                self.mode, self.mode_spelled = mode, spelled
            return
        pair = f"{self.mode_spelled} and {spelled}"
        if self.mode in _QUEUE_OPERATIONS and mode in _QUEUE_OPERATIONS:
            raise UsageError(
                f"conflicting queue operations: {pair}",
                hint="give one of -bp, -bj, -q, -Qd, -Qb, -Qr per run",
            )
        if self.mode in _QUEUE_OPERATIONS or mode in _QUEUE_OPERATIONS:
            raise UsageError(
                f"sending mail and queue operations are mutually exclusive: {pair}",
                hint="run dma once to send and once for the queue",
            )
        raise UsageError(f"conflicting modes: {pair}", hint="give only one -b option")


def _parse_full(program: str, words: Sequence[str]) -> Invocation:
    """The sendmail option set (SPEC 1), then the checks that span options."""
    draft = _Draft()
    for item in _scan(words, _FULL_TABLE, _HINT):
        if isinstance(item, _Word):
            draft.words.append(item.text)
        elif item.letter == HELP_OPTION:
            return Invocation(program=program, mode=Mode.HELP)
        else:
            _apply(draft, item)
    mode = draft.mode or Mode.SEND
    recipients = _positional(mode, draft.mode_spelled, tuple(draft.words))
    return Invocation(
        program=program,
        mode=mode,
        recipients=recipients,
        sender=draft.sender,
        full_name=draft.full_name,
        headers_recipients=draft.headers_recipients,
        ignore_dots=draft.ignore_dots,
        queue_only=draft.queue_only,
        foreground=draft.foreground,
        verbose=draft.verbose,
        queue_interval=draft.queue_interval,
        selectors=tuple(draft.selectors),
        json=draft.json,
        syslog_tag=draft.syslog_tag,
        config_path=draft.config_path,
        dsn_notify=draft.dsn_notify,
        dsn_ret=draft.dsn_ret,
        dsn_envid=draft.dsn_envid,
        body_type=draft.body_type,
    )


def _apply(draft: _Draft, option: _Option) -> None:
    """Fold one option into the draft; the last of a repeated value option wins."""
    match option.letter:
        case "t":
            draft.headers_recipients = True
        case "i":
            draft.ignore_dots = True
        case "D":
            draft.foreground = True
        case "v":
            draft.verbose = True
        case "n" | "U" | "O" | "d" | "h" | "X":
            pass  # sendmail options dma accepts and ignores
        case "q":
            _apply_q(draft, option)
        case "C":
            draft.config_path = _config_path(option)
        case _:
            _apply_value(draft, option.letter, option.value or "", option.spelled)


def _apply_value(draft: _Draft, letter: str, value: str, spelled: str) -> None:
    """The options that carry a value checked on its own."""
    match letter:
        case "f" | "r":
            draft.sender = _unwrap_sender(value)
        case "F":
            draft.full_name = value
        case "o":
            if value[:1] == "i":
                draft.ignore_dots = _sendmail_bool(value[1:])
        case "A":
            _check_a(value)
        case "b":
            _apply_b(draft, value)
        case "Q":
            _apply_queue_operation(draft, value)
        case "L":
            draft.syslog_tag = _syslog_tag(value)
        case "N":
            draft.dsn_notify = _dsn_notify(value)
        case "R":
            draft.dsn_ret = _one_of(value, _DSN_RET_WORDS, "-R")
        case "V":
            draft.dsn_envid = _dsn_envid(value)
        case "B":
            draft.body_type = _one_of(value, _BODY_TYPES, "-B")
        case _:  # pragma: no cover - the option table and these matches list the same letters
            raise UsageError(f"invalid option {spelled}", hint=_HINT)


def _check_a(value: str) -> None:
    """``-Ac`` and ``-Am`` (sendmail's submit.cf choice) are accepted and mean nothing here."""
    if value not in ("c", "m"):
        raise UsageError(
            f"invalid value for -A: '{_show(value)}'",
            hint="dma accepts -Ac and -Am and ignores them",
        )


def _apply_queue_operation(draft: _Draft, value: str) -> None:
    """``-Qd``, ``-Qb``, ``-Qr``: queue management (SPEC 1 leaves the spelling to us)."""
    queue_mode = _Q_MODES.get(value)
    if queue_mode is None:
        raise UsageError(
            f"unknown queue operation -Q{_show(value)}",
            hint="-Qd ID... deletes items, -Qd ALL deletes all, -Qb ID... bounces "
            "them, -Qr ID... puts quarantined ones back",
        )
    draft.request(queue_mode, f"-Q{value}")


def _syslog_tag(value: str) -> str:
    """``-L``: a printable, non-empty syslog identifier."""
    if not value or not value.isprintable():
        raise UsageError(
            f"invalid syslog tag for -L: '{_show(value)}'",
            hint="give a short printable name, e.g. -L dma-cron",
        )
    return value


def _apply_b(draft: _Draft, value: str) -> None:
    """``-bX``: one mode letter."""
    if value == "d":
        raise UsageError(
            "dma never listens on a port: -bd is not supported",
            hint="use -bs for SMTP on stdin/stdout, e.g. from inetd or a systemd socket unit",
        )
    found = _B_MODES.get(value)
    if found is None:
        raise UsageError(
            f"unknown mode -b{_show(value)}", hint="dma knows -bp -bj -bq -bs -bv -bm -bi"
        )
    mode, json, queue_only = found
    draft.request(mode, f"-b{value}")
    draft.json = draft.json or json
    draft.queue_only = draft.queue_only or queue_only


def _apply_q(draft: _Draft, option: _Option) -> None:
    """``-q``, ``-qTIME``, ``-qf``, ``-qp[TIME]``, ``-q[!]I S``, ``-q[!]R S``, ``-q[!]S S``:
    all ask for a queue run.

    ``-qf`` (sendmail: once, in the foreground) is ``-q``, which never detaches;
    ``-qp`` (sendmail's persistent runner) is ``-qTIME``, every
    DEFAULT_PERSISTENT_INTERVAL seconds without a time.
    """
    draft.request(Mode.RUN_QUEUE, "-q")
    value = option.value
    if option.spelled != "-q":
        if not value:
            raise UsageError(
                f"option {option.spelled} needs a non-empty argument",
                hint=f"{option.spelled} S runs only items that contain S",
            )
        kind = _SELECTOR_KINDS[option.spelled[-1]]
        draft.selectors.append(QueueSelector(kind, value, negate="!" in option.spelled))
    elif value == "f":
        draft.foreground = True
    elif value is not None and value[:1] == "p":
        rest = value[1:]
        draft.queue_interval = (
            _queue_interval(rest, "-qp") if rest else DEFAULT_PERSISTENT_INTERVAL
        )
    elif value is not None:
        draft.queue_interval = _queue_interval(value)


def _queue_interval(text: str, spelled: str = "-q") -> int:
    """Seconds for ``-q30m`` (``-qp30m``); DataError from durations becomes our UsageError."""
    hint = "write e.g. -q30m or -q1h; -q or -qf alone runs the queue once"
    shown = f"{spelled}{_show(text)}"
    from dma.core.durations import parse_duration  # -qTIME only: keeps submission light

    # Guard what parse_duration does not: non-ASCII digits and int()'s digit limit.
    if not text.isascii() or len(text) > 32:
        raise UsageError(f"invalid queue interval {shown}", hint=hint)
    try:
        seconds = parse_duration(text)
    except DataError as error:
        raise UsageError(f"invalid queue interval {shown}: {error.message}", hint=hint) from None
    if seconds > MAX_QUEUE_INTERVAL:
        raise UsageError(f"queue interval {shown} is longer than 30 days", hint=hint)
    return seconds


def _positional(mode: ModeName, spelled: str, words: tuple[str, ...]) -> tuple[str, ...]:
    """Check the positional words against the mode: recipients, queue ids or nothing."""
    if mode in (Mode.LIST_QUEUE, Mode.RUN_QUEUE) and words:
        raise UsageError(
            f"sending mail and queue operations are mutually exclusive: "
            f"{spelled} with recipient {_show(words[0])}",
            hint="run dma once to send and once for the queue",
        )
    if mode in (Mode.SMTP_SESSION, Mode.NEWALIASES) and words:
        raise UsageError(
            f"{spelled} takes no arguments: {_show(words[0])}",
            hint="with -bs the recipients come from RCPT TO commands"
            if mode is Mode.SMTP_SESSION
            else "-bi only checks the aliases file",
        )
    if mode is Mode.VERIFY and not words:
        raise UsageError("-bv needs at least one address", hint="write dma -bv user@example.org")
    if mode in (Mode.DELETE, Mode.BOUNCE, Mode.RELEASE):
        return _queue_ids(mode, spelled, words)
    return words


def _queue_ids(mode: ModeName, spelled: str, words: tuple[str, ...]) -> tuple[str, ...]:
    """Item ids (``20ca94.556f80``) or message ids (``20ca94``) for -Qd/-Qb: they become
    file names (Q<id>, M<id>), so no slashes and no dot-dot."""
    from dma.core.queuefile import is_file_safe_id

    hint = f"{spelled} takes queue ids as mailq shows them"
    if mode is Mode.DELETE:
        hint += ", or ALL alone for every item"
    if not words:
        raise UsageError(f"{spelled} needs at least one queue id", hint=hint)
    if DELETE_ALL in words:
        if mode is not Mode.DELETE:
            raise UsageError(f"{spelled} ALL is not supported", hint="name the items one by one")
        if len(words) > 1:
            raise UsageError(f"{spelled} ALL takes no other ids", hint=hint)
        return words
    for word in words:
        if not is_file_safe_id(word) or ".." in word:
            raise UsageError(f"invalid queue id '{_show(word)}'", hint=hint)
    return words


# --- option values ------------------------------------------------------------------------


def _unwrap_sender(text: str) -> str:
    """``-f <a@b>`` -> ``a@b``; ``<>``, empty or blank -> ``""`` (the null sender)."""
    stripped = text.strip()
    if len(stripped) >= 2 and stripped[0] == "<" and stripped[-1] == ">":
        return stripped[1:-1]
    return stripped


def _sendmail_bool(text: str) -> bool:
    """sendmail's atobool for ``-oiVALUE``: empty or t/y means true."""
    return text[:1] in ("", "t", "T", "y", "Y")


def _config_path(option: _Option) -> str:
    """``-C FILE``: any non-empty path."""
    if not option.value:
        raise UsageError("option -C needs a file name", hint="write -C /etc/dma/dma.conf")
    return option.value


def _one_of(text: str, allowed: tuple[str, ...], spelled: str) -> str:
    """A keyword option (``-R``, ``-B``), case-insensitive, returned upper case."""
    upper = text.upper()
    if upper not in allowed:
        raise UsageError(
            f"invalid value for {spelled}: '{_show(text)}'", hint=f"use one of {', '.join(allowed)}"
        )
    return upper


def _dsn_notify(text: str) -> str:
    """``-N``: NEVER, or a comma list of SUCCESS, FAILURE, DELAY (RFC 3461 section 4.1)."""
    from dma.core.dsn import NOTIFY_WORDS  # -N, -V only: keeps submission light

    hint = "write -N never, or a list such as -N failure,delay"
    parts = [part.strip().upper() for part in text.split(",")]
    if parts == ["NEVER"]:
        return "NEVER"
    words: list[str] = []
    for part in parts:
        if part not in NOTIFY_WORDS:
            raise UsageError(f"invalid value for -N: '{_show(text)}'", hint=hint)
        if part not in words:
            words.append(part)
    return ",".join(words)


def _dsn_envid(text: str) -> str:
    """``-V``: what the SMTP client can send (core/dsn.envid_problem: one rule for both)."""
    from dma.core.dsn import ENVID_MAX, envid_problem

    problem = envid_problem(text)
    if problem is not None:
        raise UsageError(
            f"invalid envelope id for -V: '{_show(text)}'",
            hint=f"{problem}; use up to {ENVID_MAX} printable ASCII characters without spaces",
        )
    return text
