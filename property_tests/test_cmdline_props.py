"""Properties of the command line parser: total over any argv, and a render/parse round trip."""

from __future__ import annotations

from dataclasses import fields

from hypothesis import given, settings
from hypothesis import strategies as st

from dma.core.cmdline import (
    DEFAULT_PERSISTENT_INTERVAL,
    MAX_QUEUE_INTERVAL,
    Invocation,
    Mode,
    QueueSelector,
    parse_command_line,
)
from dma.core.durations import format_duration
from dma.core.errors import DmaError

_FORBIDDEN = ("\r", "\n", "\0")

# Words that look like what people type, so the fuzzing reaches deep into the parser.
_OPTION_WORDS = st.sampled_from(
    [
        "-t", "-i", "-oi", "-oem", "-f", "-r", "-F", "-bp", "-bj", "-bq", "-bs", "-bv",
        "-bm", "-bi", "-bd", "-b", "-q", "-q30m", "-qI", "-qR", "-qS", "-qIab", "-Qd",
        "-Qb", "-Q", "-A", "-Ac", "-N", "-R", "-V", "-B", "-L", "-C", "-D", "-v", "-j",
        "--", "-", "ALL", "abc.1", "a@b", "<>", "never", "full", "8bitmime", "-tif",
        "-qf", "-qp", "-qp5m", "-qpx", "-q!", "-q!I", "-q!Rab", "-q!S", "-Qr", "-vqf",
    ]
)  # fmt: skip
_DASH_TEXT = st.text(max_size=8).map(lambda text: "-" + text)
_WORD = st.one_of(_OPTION_WORDS, _DASH_TEXT, st.text(max_size=12))
_ARGV0 = st.one_of(
    st.sampled_from(["dma", "sendmail", "mailq", "newaliases", "/usr/bin/mailq", ""]),
    st.text(max_size=10),
)


@settings(max_examples=200, deadline=None)
@given(argv0=_ARGV0, words=st.lists(_WORD, max_size=8))
def test_any_argv_parses_or_raises_dma_error(argv0: str, words: list[str]) -> None:
    """Any argv gives an Invocation free of line breaks and queue/recipient mixes, or a DmaError."""
    try:
        inv = parse_command_line([argv0, *words])
    except DmaError as error:
        assert "\n" not in str(error) and "\r" not in str(error)
        return
    for item in fields(inv):
        value = getattr(inv, item.name)
        texts = value if isinstance(value, tuple) else (value,)
        for text in texts:
            if isinstance(text, str):
                assert not any(bad in text for bad in _FORBIDDEN)
    if inv.mode in (Mode.LIST_QUEUE, Mode.RUN_QUEUE, Mode.SMTP_SESSION, Mode.NEWALIASES):
        assert inv.recipients == ()
    if inv.mode in (Mode.DELETE, Mode.BOUNCE, Mode.RELEASE, Mode.VERIFY):
        assert inv.recipients != ()
    if inv.mode is not Mode.RUN_QUEUE:
        assert inv.selectors == () and inv.queue_interval is None


@settings(max_examples=100, deadline=None)
@given(words=st.lists(st.text(), max_size=6))
def test_any_text_argv_parses_or_raises_dma_error(words: list[str]) -> None:
    """Completely arbitrary text words never raise anything but a DmaError."""
    try:
        parse_command_line(words)
    except DmaError:
        pass


# --- round trip --------------------------------------------------------------------------

_LINE = st.text(st.characters(blacklist_characters="\r\n\0"), max_size=12)
_NON_EMPTY = _LINE.filter(bool)
_PROGRAM = st.text("abcdefghijklmnopqrstuvwxyz-_.0123456789", min_size=1, max_size=10).filter(
    lambda name: name not in ("mailq", "newaliases") and name.strip(".") != ""
)
_NOTIFY = st.one_of(
    st.just("NEVER"),
    st.lists(st.sampled_from(["SUCCESS", "FAILURE", "DELAY"]), min_size=1, unique=True).map(
        ",".join
    ),
)
_ENVID = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=100)


@st.composite
def send_invocations(draw: st.DrawFn) -> Invocation:
    """Invocations of SEND mode that the parser can produce."""
    return Invocation(
        program=draw(_PROGRAM),
        mode=Mode.SEND,
        recipients=tuple(draw(st.lists(_LINE, max_size=4))),
        sender=draw(st.none() | _LINE),
        full_name=draw(st.none() | _LINE),
        headers_recipients=draw(st.booleans()),
        ignore_dots=draw(st.booleans()),
        queue_only=draw(st.booleans()),
        foreground=draw(st.booleans()),
        verbose=draw(st.booleans()),
        syslog_tag=draw(st.just("dma") | _NON_EMPTY.filter(str.isprintable)),
        config_path=draw(st.none() | _NON_EMPTY),
        dsn_notify=draw(st.none() | _NOTIFY),
        dsn_ret=draw(st.none() | st.sampled_from(["FULL", "HDRS"])),
        dsn_envid=draw(st.none() | _ENVID),
        body_type=draw(st.none() | st.sampled_from(["7BIT", "8BITMIME"])),
    )


def render(inv: Invocation, draw: st.DrawFn) -> list[str]:
    """Write ``inv`` as a sendmail argv, letting hypothesis pick clustering and spelling."""
    flags = [letter for letter, on in (("t", inv.headers_recipients), ("D", inv.foreground),
             ("v", inv.verbose)) if on]  # fmt: skip
    valued: list[tuple[str, str]] = []
    if inv.ignore_dots:
        if draw(st.booleans()):
            flags.append("i")
        else:
            valued.append(("o", "i"))
    if inv.queue_only:
        valued.append(("b", "q"))
    elif draw(st.booleans()):
        valued.append(("b", "m"))
    if inv.sender is not None:
        valued.append((draw(st.sampled_from("fr")), f"<{inv.sender}>"))
    for letter, value in (
        ("F", inv.full_name),
        ("L", None if inv.syslog_tag == "dma" else inv.syslog_tag),
        ("C", inv.config_path),
        ("N", inv.dsn_notify and draw(st.sampled_from([str.lower, str.upper]))(inv.dsn_notify)),
        ("R", inv.dsn_ret and inv.dsn_ret.lower()),
        ("V", inv.dsn_envid),
        ("B", inv.body_type and draw(st.sampled_from([str.lower, str.upper]))(inv.body_type)),
    ):
        if value is not None:
            valued.append((letter, value))
    units: list[str | tuple[str, str]] = [*flags, *valued]
    units = draw(st.permutations(units))

    words: list[str] = []
    cluster = ""
    for unit in units:
        if isinstance(unit, str):
            cluster += unit
            if draw(st.booleans()):
                words.append("-" + cluster)
                cluster = ""
            continue
        letter, value = unit
        if value and draw(st.booleans()):
            words.append(f"-{cluster}{letter}{value}")
        else:
            words += [f"-{cluster}{letter}", value]
        cluster = ""
    if cluster:
        words.append("-" + cluster)

    recipients = list(inv.recipients)
    plain = 0
    while plain < len(recipients) and not recipients[plain].startswith("-"):
        plain += 1
    lead = draw(st.integers(0, plain))
    tail = recipients[lead:]
    if any(word.startswith("-") for word in tail) or draw(st.booleans()):
        tail = ["--", *tail]
    prefix = draw(st.sampled_from(["", "/usr/sbin/", "./", "/opt/dma/bin/"]))
    return [prefix + inv.program, *recipients[:lead], *words, *tail]


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_send_invocation_round_trips(data: st.DataObject) -> None:
    """A SEND Invocation rendered to argv in any sendmail spelling parses back to itself."""
    inv = data.draw(send_invocations())
    argv = render(inv, data.draw)
    assert parse_command_line(argv) == inv


_SELECTORS = st.builds(
    QueueSelector,
    kind=st.sampled_from(["id", "recipient", "sender"]),
    text=_NON_EMPTY,
    negate=st.booleans(),
)
_LETTER = {"id": "I", "recipient": "R", "sender": "S"}


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_queue_run_round_trips(data: st.DataObject) -> None:
    """A queue run with selectors (plain or negated, attached or separate), an interval
    (-qTIME, -qpTIME, or -qp alone for the default) and -qf, in any order, parses back."""
    selectors = data.draw(st.lists(_SELECTORS, max_size=4))
    interval = data.draw(st.none() | st.integers(1, MAX_QUEUE_INTERVAL))
    foreground = data.draw(st.booleans())
    units: list[list[str]] = []
    for selector in selectors:
        spelled = f"-q{'!' if selector.negate else ''}{_LETTER[selector.kind]}"
        attached = data.draw(st.booleans())
        units.append([spelled + selector.text] if attached else [spelled, selector.text])
    extras: list[list[str]] = []
    if interval is not None:
        if interval == DEFAULT_PERSISTENT_INTERVAL and data.draw(st.booleans()):
            extras.append(["-qp"])
        else:
            prefix = data.draw(st.sampled_from(["-q", "-qp"]))
            extras.append([prefix + format_duration(interval)])
    if foreground:
        extras.append(["-qf"])
    if not units and not extras:
        extras.append(["-q"])
    for extra in extras:
        units.insert(data.draw(st.integers(0, len(units))), extra)
    argv = ["sendmail", *(word for unit in units for word in unit)]
    assert parse_command_line(argv) == Invocation(
        program="sendmail", mode=Mode.RUN_QUEUE, queue_interval=interval,
        selectors=tuple(selectors), foreground=foreground,
    )
