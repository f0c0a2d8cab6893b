"""The dma(8) manual page and the ``dma --help`` summary, both from the tables here.

One source, two renderings, so they cannot drift: ``OPTIONS`` describes every
command-line option (tests/test_manual.py checks it against what core/cmdline.py
accepts), the dma.conf keys come from core/config.KEYS (the README table is checked
against the same), and paths, modes and names from core/system_layout.  ``roff()``
gives the page in man(7) macros (``dma install-system`` writes it to
``/usr/local/share/man/man8/dma.8``); ``help_text()`` the plain-text summary.

Markup in the tables is plain text.  In SYNOPSIS-like forms (``OptionDoc.forms``,
``USAGES``) a word that starts with ``-``, a word in capitals and the words of
``_LITERAL_WORDS`` are typed as given (bold on the page); other words are
placeholders (italic).  In prose an option (``-q30m``) or a dma.conf key
(``SMARTHOST``) is set in bold.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from dma.core import sysexits, system_layout
from dma.core.cmdline import DEFAULT_PERSISTENT_INTERVAL, DELETE_ALL, HELP_OPTION
from dma.core.config import KEYS, Config, KeySpec
from dma.core.dsn import ENVID_MAX
from dma.core.durations import format_duration
from dma.core.version import PRODUCT, VERSION

PAGE_DATE = "2026-12-06"
"""The date on the page: when its text last changed (a pure function reads no clock)."""


@dataclass(frozen=True, slots=True)
class OptionDoc:
    """One entry of the OPTIONS section: how it is written, in one line, and more.

    ``forms`` are the spellings the entry covers (``-f sender``, ``-r sender``);
    ``summary`` is the one line of ``dma --help``; ``details`` follow it on the page.
    """

    forms: tuple[str, ...]
    summary: str
    details: str = ""


@dataclass(frozen=True, slots=True)
class OptionGroup:
    """A subsection of OPTIONS and a paragraph of ``--help``."""

    title: str
    options: tuple[OptionDoc, ...]


_PERSISTENT = format_duration(DEFAULT_PERSISTENT_INTERVAL)

OPTIONS: tuple[OptionGroup, ...] = (
    OptionGroup("Sending mail", (
        OptionDoc(
            ("-t",), "add the recipients of the To:, Cc: and Bcc: headers",
            "They are added to those on the command line. The addresses are read with a"
            " full RFC 5322 parser (display names, quoted strings, groups). Bcc: headers"
            " are removed from the message with or without -t."),
        OptionDoc(
            ("-i", "-oi"), "a line with a lone dot does not end the input",
            "Without it, a line holding only a dot ends the message, as in sendmail."),
        OptionDoc(
            ("-f sender", "-r sender"), "envelope sender (<sender> is unwrapped; <> is null)",
            "An empty sender or <> gives the null sender. Without it the sender is $EMAIL,"
            " else the login name at the mail name; MASQUERADE overrides all of these."),
        OptionDoc(
            ("-F name",), "full name for the From: header that dma adds",
            "Used only when the message has no From: header."),
        OptionDoc(
            ("-bm",), "submit a message (the default mode)"),
        OptionDoc(
            ("-bq",), "only queue the message; deliver at the next queue run",
            "As DEFER does, for this message."),
        OptionDoc(
            ("-D",), "deliver in the foreground; the exit status says how",
            "0 delivered, 75 deferred, 69 bounced. Without -D a detached process delivers"
            " the message and dma exits 0 as soon as it is safely queued."),
        OptionDoc(
            ("-v",), "verbose: log to standard error, show the SMTP dialogue",
            "AUTH secrets are shown as ***."),
        OptionDoc(
            ("-N dsn",), "DSN notify: never, or a list of success,failure,delay",
            "Passed to servers that offer DSN (RFC 3461), as are -R and -V."),
        OptionDoc(
            ("-R ret",), "DSN return: full or hdrs"),
        OptionDoc(
            ("-V envid",), "DSN envelope id",
            f"Up to {ENVID_MAX} printable ASCII characters without spaces."),
        OptionDoc(
            ("-B type",), "body type 7bit or 8bitmime (accepted)",
            "8BITMIME is declared when the server offers it and the message holds 8-bit"
            " data, whatever -B says."),
    )),
    OptionGroup("Other modes", (
        OptionDoc(
            ("-bs",), "speak SMTP on standard input and output",
            "Each mail transaction is queued as a message (Symfony Mailer and SwiftMailer"
            " use this). Only <CR><LF>.<CR><LF> ends the data (SMTP smuggling,"
            " CVE-2023-51764)."),
        OptionDoc(
            ("-bv address ...",), "show how each address would be routed; send nothing",
            "Alias expansion, local or remote, and which host."),
        OptionDoc(
            ("-bi",), "check the aliases file, as newaliases does"),
        OptionDoc(
            ("-bd",), "refused: dma never listens on a port",
            "Use -bs from inetd or a systemd socket unit instead."),
        OptionDoc(
            ("-C file",), "use this dma.conf (also $DMA_CONF)",
            "It replaces the default one: the system one or the embedded default's"
            " (see FILES)."),
        OptionDoc(
            ("-L tag",), "syslog identifier instead of dma"),
        OptionDoc(
            (HELP_OPTION,), "print a summary of the options and exit"),
    )),
    OptionGroup("The queue", (
        OptionDoc(
            ("-bp",), "list the queue (mailq)",
            "Oldest first, with age, size, tries, next try and last error, and a summary."),
        OptionDoc(
            ("-bj",), "list the queue as JSON lines (mailq -j)",
            "One item a line, with the facts of -bp."),
        OptionDoc(
            ("-q", "-qf"), "run the queue once, now, in the foreground"),
        OptionDoc(
            ("-q[time]",), "keep running the queue at this interval (30m, 1h)",
            "One such runner per spool: a second one runs the queue once and exits."
            " SIGHUP runs the queue at once, SIGTERM stops the runner."),
        OptionDoc(
            ("-qp[time]",), f"persistent runner at this interval, {_PERSISTENT} without one"),
        OptionDoc(
            ("-qI substr", "-qR substr", "-qS substr"),
            "run only items with substr in id, recipient or sender",
            "-q!I, -q!R and -q!S skip those items instead. Selectors of one kind are"
            " alternatives; selectors of different kinds must all match, as in sendmail."),
        OptionDoc(
            ("-Qd id ...", f"-Qd {DELETE_ALL}"), "delete queue items (or all of them)",
            "An id is an item id or a message id as mailq shows it; quarantined items"
            " are deleted too."),
        OptionDoc(
            ("-Qb id ...",), "bounce queue items to their senders now"),
        OptionDoc(
            ("-Qr id ...",), "put quarantined items back into the queue",
            "After fixing what made them damaged."),
        OptionDoc(
            ("-j",), "with mailq: list as JSON lines, as -bj"),
    )),
    OptionGroup("Accepted and ignored, for compatibility", (
        OptionDoc(("-Ac", "-Am"), "sendmail's submit.cf choice"),
        OptionDoc(("-o option",), "sendmail options such as -oem, -odb, -odi",
                  "Only -oi has a meaning (see -i)."),
        OptionDoc(("-O option",), "sendmail options"),
        OptionDoc(("-n",), "sendmail's no-aliases flag; dma expands them anyway"),
        OptionDoc(("-U",), "initial user submission"),
        OptionDoc(("-h hops",), "hop count (not help: that is --help)"),
        OptionDoc(("-d flags",), "sendmail debugging flags"),
        OptionDoc(("-X file",), "sendmail traffic log"),
    )),
)

USAGES: tuple[str, ...] = (
    "sendmail [options] [recipient ...] < message",
    "dma -bs | -bv address ... | -bi",
    "mailq [-j] [-v] [-C file]",
    "dma -q[time] [-qI substr] [-qR substr] [-qS substr]",
    f"dma -Qd id ... | -Qd {DELETE_ALL} | -Qb id ... | -Qr id ...",
    "newaliases [-C file]",
    "dma install-system [--dry-run] [--force] [--uninstall]",
    f"dma {HELP_OPTION}",
)
"""The synopsis lines; ``dma`` and ``sendmail`` are the same command."""

_LITERAL_WORDS = frozenset({"sendmail", "dma", "mailq", "newaliases", "install-system"})

ENVIRONMENT: tuple[tuple[str, str], ...] = (
    ("DMA_CONF", "the dma.conf to use when -C is not given"),
    ("EMAIL", "the envelope sender when -f and -r are not given (MASQUERADE still"
              " overrides it)"),
    ("DMA_LOCK_TIMEOUT", "seconds (0 to 3600) to wait for a locked mailbox before the"
                         " delivery is deferred; 60 when unset or not a number"),
    ("HOME", "where the embedded default lives (with XDG_CONFIG_HOME, XDG_STATE_HOME)"),
    ("XDG_CONFIG_HOME", "the embedded default's dma.conf is in $XDG_CONFIG_HOME/dma"),
    ("XDG_STATE_HOME", "the embedded default's spool and mailboxes are in"
                       " $XDG_STATE_HOME/dma"),
    ("LOGNAME", "with USER, the login name, when it belongs to the real user id"),
    ("USER", "see LOGNAME"),
)

EXIT_STATUS: tuple[tuple[int, str], ...] = (
    (sysexits.EX_OK, "the message is queued (with -D: delivered), or the operation"
                     " succeeded; once a message is queued dma exits 0 whatever happens"
                     " next, unless -D asked for the outcome"),
    (sysexits.EX_USAGE, "a usage error: a bad option or value, or modes that do not go"
                        " together"),
    (sysexits.EX_DATAERR, "bad input: a NUL byte, a bad address in the headers read by -t,"
                          " a header field over 1 MiB; newaliases found problems"),
    (sysexits.EX_NOINPUT, "no recipients, unreadable input or configuration file, or an"
                          " unknown queue id"),
    (sysexits.EX_NOUSER, "a local recipient that is neither an alias nor a user"),
    (sysexits.EX_UNAVAILABLE, "with -D: the message bounced"),
    (sysexits.EX_SOFTWARE, "an internal error before the message was queued (logged to"
                           " syslog)"),
    (sysexits.EX_CANTCREAT, "a spool or configuration file could not be created"),
    (sysexits.EX_IOERR, "an input/output error"),
    (sysexits.EX_TEMPFAIL, "with -D: the delivery was deferred; a queue item was busy;"
                           " interrupted"),
    (sysexits.EX_NOPERM, "install-system run by a user other than root"),
    (sysexits.EX_CONFIG, "an error in dma.conf, auth.conf or the aliases file, named with"
                         " file and line"),
)

SEE_ALSO: tuple[tuple[str, str], ...] = (
    ("aliases", "5"), ("mbox", "5"), ("sendmail", "8"), ("cron", "8"), ("systemd.path", "5"),
)

# The placeholder after a key on the page: by key where the kind says too little, else by kind.
_KEY_VALUES = {"SMARTHOST": "host"}
_KIND_VALUES = {
    "string": "value", "path": "path", "port": "port", "count": "number",
    "duration": "duration", "fingerprint": "sha256", "nameserver": "address",
    "mailname": "name", "masquerade": "address",
}


_HELP_FORMS_WIDTH = 20
"""Wider option spellings get a line of their own in ``dma --help``."""
_ROFF_LINE = 80
"""mandoc's limit for an input line (style)."""

# --- plain text: dma --help --------------------------------------------------------------


def help_text() -> str:
    """The summary that ``dma --help`` prints: usage, every option in one line, the keys."""
    lines = [f"{PRODUCT} {VERSION}: dma, a small sendmail-compatible mail transport agent", ""]
    for number, usage in enumerate(USAGES):
        lines.append(("usage: " if number == 0 else "       ") + usage)
    width = max(len(", ".join(entry.forms)) for group in OPTIONS for entry in group.options)
    width = min(width, _HELP_FORMS_WIDTH)
    for group in OPTIONS:
        lines += ["", f"{group.title}:"]
        for entry in group.options:
            spelled = ", ".join(entry.forms)
            if len(spelled) > width:
                lines.append(f"  {spelled}")
                lines.append(f"  {'':{width}}  {entry.summary}")
            else:
                lines.append(f"  {spelled:{width}}  {entry.summary}")
    lines += ["", f"dma.conf keys (default {system_layout.SYSTEM_CONFIG}; see dma(8)):"]
    lines += _wrap(" ".join(KEYS), 78, "  ")
    lines += ["", "The manual page dma(8) describes every option, key, file and exit status."]
    return "\n".join(lines) + "\n"


def _wrap(text: str, width: int, indent: str) -> list[str]:
    """Break ``text`` at blanks into lines of at most ``width`` columns, each indented."""
    lines: list[str] = []
    line = ""
    for word in text.split():
        if line and len(indent) + len(line) + 1 + len(word) > width:
            lines.append(indent + line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    if line:
        lines.append(indent + line)
    return lines


# --- roff: the dma(8) page ---------------------------------------------------------------


def roff(date: str = PAGE_DATE) -> str:
    """The dma(8) manual page in man(7) macros, for ``man -l`` and /usr/share/man/man8."""
    out = [
        f'.TH DMA 8 "{date}" "{PRODUCT} {VERSION}" "System Manager\'s Manual"',
        ".SH NAME",
        r"dma, sendmail, mailq, newaliases \- the DragonFly Mail Agent in Python",
        ".SH SYNOPSIS",
    ]
    for number, usage in enumerate(USAGES):
        if number:
            out.append(".br")
        out += _roff_lines(_form(usage))
    out += _description()
    out += _options()
    out += _configuration()
    out += _files()
    out += _system_mode()
    out += _exit_status()
    out += _environment()
    out += [".SH SEE ALSO"]
    out.append(",\n".join(f".BR {name} ({section})" for name, section in SEE_ALSO))
    out += [
        ".SH HISTORY",
        *_prose(
            f"{PRODUCT} reimplements dma, the DragonFly Mail Agent by Matthias Schmidt and"
            " Simon Schubert, in Python: it reads the C dma's configuration files and"
            " shares its spool in both directions."),
    ]
    return "\n".join(out) + "\n"


def _description() -> list[str]:
    return [
        ".SH DESCRIPTION",
        *_prose(
            "dma accepts mail from local programs (cron, mail user agents, scripts)"
            " through the sendmail command line, spools it durably and delivers it:"
            " locally to mailboxes in MAILDIR (mbox, or Maildir where the mailbox is a"
            " Maildir), or remotely by SMTP, through SMARTHOST or to the MX hosts of each"
            " recipient's domain. It never listens on a port."),
        ".PP",
        *_prose(
            "The message is read from standard input. dma adds its Received: header and,"
            " where missing, Date:, Message-Id: and From:. It exits 0 once the message is"
            " safely in the spool; unless DEFER or -bq, a detached process delivers it"
            " at once. Temporary failures are retried with growing intervals, up to"
            " QUEUELIFETIME; permanent failures and expired messages are returned to the"
            " sender as delivery status notifications (RFC 3464)."),
        ".PP",
        *_prose(
            "The command name chooses the grammar: sendmail and dma take the options"
            " below; mailq lists the queue (as -bp); newaliases checks the aliases file"
            " (as -bi) and ignores every option but -C and --help."),
    ]


def _options() -> list[str]:
    out = [
        ".SH OPTIONS",
        *_prose(
            "Options may be clustered (-ti) and take their argument attached or separate"
            " (-fa@b or -f a@b); they may stand before or after the recipients; --"
            " ends the options. A usage error exits 64."),
    ]
    for group in OPTIONS:
        out.append(f'.SS "{group.title}"')
        for entry in group.options:
            out.append(".TP")
            out.append(", ".join(_form(form) for form in entry.forms))
            text = _sentence(entry.summary)
            if entry.details:
                text += " " + entry.details
            out += _prose(text)
    return out


def _configuration() -> list[str]:
    out = [
        ".SH CONFIGURATION",
        *_prose(
            "dma.conf holds KEY value lines; # starts a comment anywhere; blank lines are"
            " ignored. A boolean key is set by its presence alone (DEFER yes is an"
            " error). Keys are case-sensitive; an unknown key is an error that names the"
            " closest known one. Relative paths are relative to the directory of the"
            " dma.conf that names them. Durations are a number with a unit (s, m, h, d,"
            " w), repeated, as 1h30m; a bare number is seconds. Errors name the file and"
            " line and exit 78."),
        ".PP",
        *_prose(
            "FINGERPRINT, VERIFYCERT, STARTTLS and OPPORTUNISTIC_TLS only shape a TLS"
            " session that SECURETRANSFER starts: one of them without SECURETRANSFER is"
            " an error, never a delivery in plain text. NULLCLIENT needs SMARTHOST and"
            " excludes LOCALONLY."),
    ]
    for spec in KEYS.values():
        out.append(".TP")
        value = _KEY_VALUES.get(spec.name) or _KIND_VALUES.get(spec.kind)
        out.append(_form(f"{spec.name} {value}" if value else spec.name))
        out += _prose(f"{_sentence(spec.doc)} {_default_phrase(spec)}".rstrip())
    out += [
        '.SS "auth.conf"',
        *_prose(
            "The file named by AUTHPATH holds login|host:password lines, one a line; a"
            " line starting with # is a comment. The password is everything after the"
            " separator. The last matching line wins; host names match in any case. It"
            " should be readable by root and the delivery group only."),
        '.SS "aliases"',
        *_prose(
            "The file named by ALIASES holds name: dest1, dest2 lines (commas, blanks or"
            " both); continuation lines start with a blank; # starts a comment. Lookup"
            " ignores case and expansion recurses; a name that lists itself also gets its"
            " own mail. The name * catches every local name that no alias matches."
            " Destinations that start with |, / or :include: are refused: dma never runs"
            " commands or writes to arbitrary files."),
    ]
    return out


def _default_phrase(spec: KeySpec) -> str:
    """How the page states a key's default, from the same value the README shows."""
    if spec.kind == "ignored":
        return ""
    if spec.kind == "bool":
        return "Off unless given."
    if spec.default == "unset":
        return "" if "(default:" in spec.doc else "Not set by default."
    return f"Default: {spec.default}."


def _files() -> list[str]:
    defaults = Config()
    spool = defaults.spooldir
    entries = (
        (system_layout.SYSTEM_CONFIG,
         "the configuration; its presence makes dma the host's MTA (system mode)"),
        ("/etc/dma/auth.conf", "SMTP logins, where AUTHPATH names it, as it usually does"),
        (defaults.aliases, "the aliases file (ALIASES)"),
        (spool, "the spool (SPOOLDIR): a Q file and an M file for each queue item"),
        (f"{spool}/{system_layout.MAILDROP}",
         "where users' submissions wait for pickup in system mode"),
        (f"{spool}/quarantine", "damaged queue items and maildrop files, each with a reason"
                                " file, until -Qr or -Qd"),
        (defaults.maildir, "the mailboxes (MAILDIR)"),
        ("~/.config/dma/dma.conf", "the embedded default's configuration, created on first"
                                   " use when the system one does not exist"),
        ("~/.local/state/dma/spool", "the embedded default's spool"),
        ("~/.local/state/dma/mail", "the embedded default's mailboxes"),
    )
    out = [".SH FILES"]
    for path, meaning in entries:
        out += [".TP", _bold(path), *_prose(_sentence(meaning))]
    return out


def _system_mode() -> list[str]:
    layout = system_layout
    maildrop = f"{Config().spooldir}/{layout.MAILDROP}"
    limit = f"{layout.MAILDROP_MAX_OCTETS // (1024 * 1024)} MiB"
    return [
        ".SH SYSTEM MODE",
        *_prose(
            f"With {layout.SYSTEM_CONFIG} present dma serves every user and program of the"
            " host, and no file of it is set-id. A user's message goes into the maildrop"
            f" {maildrop} (mode {layout.MAILDROP_MODE:o}: anyone may add files, nobody but"
            " root may list them); exit 0 means it is safely there. A runner started as"
            " root picks each file up at once (a systemd .path unit, or the long-lived"
            " dma -q5m runner where systemd does not run), checks it (a regular file"
            f" with one link, owned by a real user, at most {limit}, well formed), writes"
            " it into the spool with a Received: line naming the owner's uid, and delivers"
            " it. Anything else goes to the quarantine with one log line."),
        ".PP",
        *_prose(
            "Local delivery runs as root and creates mailboxes as"
            f" user:{layout.MAIL_GROUP}, mode {layout.MAILBOX_MODE:04o}. DNS, SMTP and TLS"
            f" never run as root: a child process runs them as the user"
            f" {layout.DELIVERY_USER}, given the secrets it needs by its parent; auth.conf"
            f" is readable by root and the group {layout.DELIVERY_GROUP} only. mailq shows"
            f" root and the group {layout.DELIVERY_GROUP} every item, any other user only"
            " their own, and -Qd deletes only a user's own items."),
        ".PP",
        *_prose(
            "dma install-system, run as root, sets the host up and says what it does:"
            " the delivery user and group, the directories and their modes, /etc/dma (an"
            " existing dma.conf is kept), the sendmail, mailq and newaliases commands"
            " under /usr, the systemd units (or a cron file where systemd does not run)"
            " and this manual page. It is idempotent. --dry-run prints the plan;"
            " --uninstall undoes exactly what it did and keeps queued mail; --force"
            " replaces another MTA's sendmail, which it otherwise refuses, naming the"
            " package that owns it. Mail that the C dma left in the spool is delivered."),
    ]


def _exit_status() -> list[str]:
    out = [
        ".SH EXIT STATUS",
        *_prose("dma exits with the sysexits(3) codes, as the C dma does:"),
    ]
    for code, meaning in EXIT_STATUS:
        out += [".TP", _bold(str(code)), *_prose(_sentence(meaning))]
    return out


def _environment() -> list[str]:
    out = [".SH ENVIRONMENT"]
    for name, meaning in ENVIRONMENT:
        out += [".TP", _bold(name), *_prose(_sentence(meaning))]
    return out


# --- roff text ---------------------------------------------------------------------------

# An option in prose: a dash at the start of a word, then a letter (-q30m, --help, -q!I).
_PROSE_OPTION = re.compile(r"(?<![\w\-])(?:--?[A-Za-z!][\w!@\-]*|--(?![\w\-]))")
_PROSE_KEY = re.compile(r"\b[A-Z][A-Z_]+\b")
_FORM_TOKEN = re.compile(r"(--?[A-Za-z!][\w!\-]*)|([A-Za-z][\w.\-]*)|(.)", re.DOTALL)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def _escape(text: str) -> str:
    """Plain text as roff text: a backslash is written \\e, anything beyond ASCII as
    \\[uXXXX], so that the page is ASCII for every formatter."""
    text = text.replace("\\", r"\e")
    if text.isascii():
        return text
    return "".join(char if char.isascii() else f"\\[u{ord(char):04X}]" for char in text)


def _dashes(text: str) -> str:
    """Dashes as minus signs, so that options copied from the page work."""
    return text.replace("-", r"\-")


def _bold(text: str) -> str:
    """A literal (option, key, path, command): bold, never hyphenated."""
    return rf"\%\fB{_dashes(_escape(text))}\fR"


def _italic(text: str) -> str:
    return rf"\fI{_escape(text)}\fR"


def _form(form: str) -> str:
    """One option or usage form: literals bold, placeholders italic, punctuation roman."""
    parts: list[str] = []
    for flag, word, other in _FORM_TOKEN.findall(form):
        if flag:
            parts.append(_bold(flag))
        elif word:
            literal = word.isupper() or word in _LITERAL_WORDS
            parts.append(_bold(word) if literal else _italic(word))
        else:
            parts.append(_escape(other))
    return _line_start("".join(parts))


def _sentence(text: str) -> str:
    """A table's lower-case fragment as a sentence: capital first letter, final stop."""
    text = text.strip()
    first = text.split(" ", 1)[0]
    if first.isalpha() and first.islower() and first not in _LITERAL_WORDS:
        text = text[0].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."


def _prose(text: str) -> list[str]:
    """Running text as roff lines: one sentence a line, options and keys in bold."""
    lines: list[str] = []
    for sentence in _SENTENCE_END.split(text.strip()):
        lines += _roff_lines(_mark_prose(sentence))
    return lines


def _roff_lines(text: str) -> list[str]:
    """Break roff text at blanks into input lines of at most _ROFF_LINE bytes where the
    words allow; a line that ends with a full stop inside a sentence gets ``\\&`` so
    that it is not taken for the end of one."""
    lines = _wrap(text, _ROFF_LINE - 2, "")
    for number, line in enumerate(lines[:-1]):
        if line.endswith((".", "!", "?")):
            lines[number] = line + r"\&"
    return [_line_start(line) for line in lines]


def _mark_prose(text: str) -> str:
    pieces: list[str] = []
    position = 0
    for match in _PROSE_OPTION.finditer(text):
        pieces.append(_keys_bold(_escape(text[position:match.start()])))
        pieces.append(_bold(match.group(0)))
        position = match.end()
    pieces.append(_keys_bold(_escape(text[position:])))
    return "".join(pieces)


def _keys_bold(text: str) -> str:
    return _PROSE_KEY.sub(
        lambda match: _bold(match.group(0)) if match.group(0) in KEYS else match.group(0),
        text,
    )


def _line_start(line: str) -> str:
    """Keep a text line from being read as a request: no leading dot or quote."""
    return r"\&" + line if line[:1] in (".", "'") else line


def option_forms() -> Iterable[str]:
    """Every spelling that OPTIONS documents, as written (``-f sender``, ``-q[time]``)."""
    for group in OPTIONS:
        for entry in group.options:
            yield from entry.forms


def option_flags() -> frozenset[str]:
    """The option part of every documented spelling: ``-f``, ``-q``, ``-qI``, ``--help``."""
    return frozenset(_flag(form) for form in option_forms())


def _flag(form: str) -> str:
    match = re.match(r"--?[A-Za-z!][\w!\-]*", form)
    assert match is not None, form
    return match.group(0)
