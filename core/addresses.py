"""Mail addresses: RFC 5321 envelope paths and RFC 5322 address lists (SPEC 3.5, 3.6, 5.4).

Two parsers with one contract: they return a value or raise DataError (exit 65)
naming the bad address, never anything else.  ``parse_envelope_address`` checks
what goes into ``MAIL FROM`` / ``RCPT TO`` and the Q file; ``parse_address_list``
reads To:/Cc:/Bcc: for ``-t``, where the C dma's scanner glued words together
(``To: John Smith`` became the recipient ``JohnSmith``).  Internationalised
addresses (RFC 6531/6532) are accepted as UTF-8; ``needs_smtputf8`` tells the SMTP
client when it must ask for SMTPUTF8.

The list parser is a small tokenizer (atoms, quoted strings, comments, domain
literals, specials) and a recursive-descent parser over its tokens.  We do not use
the ``email`` package: it imports I/O modules and has had header-parsing bugs.
Every address the list parser returns has also passed ``parse_envelope_address``.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

from dma.core.errors import DataError
from dma.core.octets import is_utf8, printable
from dma.core.values import frozen

MAX_LOCAL_OCTETS = 64
MAX_DOMAIN_OCTETS = 255
MAX_LABEL_OCTETS = 63
MAX_ADDRESS_OCTETS = 254  # RFC 5321 path limit of 256 octets, less the angle brackets

_ASCII_ATEXT = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/=?^_`{|}~"
)
_LDH = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-")
# Non-ASCII characters that are controls, surrogates or blanks/line separators are
# never part of an atom or label: they would smuggle line breaks or hide spaces.
_BAD_UNICODE_CATEGORIES = frozenset({"Cc", "Cs", "Zs", "Zl", "Zp"})
_LIST_SPECIALS = frozenset("<>,;:@.")
_ADDRESS_HINT = "write user@example.com, or a local user name"
_EXCERPT = 60


def _is_utf8_text(char: str) -> bool:
    """True for a non-ASCII character allowed in atoms and labels (RFC 6531 UTF8-non-ascii)."""
    return ord(char) > 127 and unicodedata.category(char) not in _BAD_UNICODE_CATEGORIES


def _is_atext(char: str) -> bool:
    return char in _ASCII_ATEXT or _is_utf8_text(char)


def _octets(text: str) -> int:
    """Length in UTF-8; surrogates (rejected elsewhere) must not raise here."""
    return len(text.encode("utf-8", "surrogatepass"))


def _quoted(text: str) -> str:
    """``text`` quoted for a message: as repr shows it (invisible characters such as
    U+00A0 escaped), but octets that are not UTF-8 as core/octets.printable shows them
    (\\xe9, as in the log) rather than as repr's lone surrogates."""
    return repr(text) if is_utf8(text) else f"'{printable(text)}'"


def _excerpt(text: str) -> str:
    return _quoted(text if len(text) <= _EXCERPT else text[:_EXCERPT] + "...")


# --------------------------------------------------------------------------------------
# Envelope addresses (RFC 5321 Mailbox, RFC 6531)


def unquoted_positions(text: str, wanted: str) -> tuple[tuple[int, ...], bool]:
    """Where a character of ``wanted`` stands outside double quotes in ``text``, in
    order, and whether a quoted string was left open.  Backslash escapes count only
    inside quotes, as in an RFC 5321 quoted local part."""
    positions: list[int] = []
    quoted = escaped = False
    for index, char in enumerate(text):
        if quoted:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                quoted = False
        elif char == '"':
            quoted = True
        elif char in wanted:
            positions.append(index)
    return tuple(positions), quoted


def split_address(address: str) -> tuple[str, str | None]:
    """Split ``address`` at the last '@' outside quotes into local part and domain.

    The last '@', because a quoted local part may hold '@' and a domain never does.
    The domain is None when there is no '@' (a local name).  Raises DataError when a
    quoted string is not closed, since then no split is meaningful.
    """
    positions, open_quote = unquoted_positions(address, "@")
    if open_quote:
        raise DataError(
            f"invalid address {_excerpt(address)}: unterminated quoted string",
            hint='close the local part with "',
        )
    last = positions[-1] if positions else -1
    if last < 0:
        return address, None
    return address[:last], address[last + 1 :]


def parse_envelope_address(text: str) -> str:
    """Return ``text`` unchanged if it is a valid envelope address, else raise DataError.

    ``text`` comes without angle brackets.  The null sender is the caller's business,
    so the empty string is an error here.
    """
    problem = _envelope_problem(text)
    if problem is not None:
        raise DataError(f"invalid address {_excerpt(text)}: {problem}", hint=_ADDRESS_HINT)
    return text


def is_valid_mailbox(address: str) -> bool:
    """True when ``parse_envelope_address`` accepts ``address``."""
    return _envelope_problem(address) is None


def needs_smtputf8(address: str) -> bool:
    """True when ``address`` has a non-ASCII character, so SMTP must use SMTPUTF8."""
    return not address.isascii()


def _envelope_problem(text: str) -> str | None:
    """What is wrong with ``text`` as an envelope address, or None when it is valid."""
    if not text:
        return "it is empty"
    for char, name in (("\r", "a carriage return"), ("\n", "a line feed"), ("\0", "a NUL")):
        if char in text:
            return f"it contains {name} (addresses are one line)"
    for char in "<>":
        if char in text:
            return f"it contains {_quoted(char)} (give the address without angle brackets)"
    try:
        local, domain = split_address(text)
    except DataError:
        return "unterminated quoted string"
    problem = _local_problem(local)
    if problem is None and domain is not None:
        problem = _domain_problem(domain)
    if problem is None and _octets(text) > MAX_ADDRESS_OCTETS:
        problem = f"it is longer than {MAX_ADDRESS_OCTETS} octets"
    return problem


def _local_problem(local: str) -> str | None:
    if not local:
        return "the local part before '@' is empty"
    problem = _quoted_local_problem(local) if local[0] == '"' else _dot_string_problem(local)
    if problem is None and _octets(local) > MAX_LOCAL_OCTETS:
        problem = f"the local part is longer than {MAX_LOCAL_OCTETS} octets"
    return problem


def plain_local_part(local: str) -> str:
    """``local`` without its quotes when they quote nothing (``"jd"`` is ``jd``, RFC 5321
    4.1.2 makes the two the same mailbox); any other local part as it is."""
    if len(local) < 2 or local[0] != '"' or _quoted_local_problem(local) is not None:
        return local
    chars, escaped = [], False
    for char in local[1:-1]:
        if char == "\\" and not escaped:
            escaped = True
            continue
        chars.append(char)
        escaped = False
    inner = "".join(chars)
    return inner if inner and _dot_string_problem(inner) is None else local


def _dot_string_problem(local: str) -> str | None:
    for atom in local.split("."):
        if not atom:
            return "the local part has an empty part (a dot at an end, or two in a row)"
        for char in atom:
            if char == " ":
                return "the local part has a space outside quotes"
            if not _is_atext(char):
                return f"the local part has {_quoted(char)}, which is only allowed in quotes"
    return None


def _quoted_local_problem(local: str) -> str | None:
    """RFC 5321 Quoted-string (qtextSMTP / quoted-pairSMTP) plus RFC 6531 UTF-8."""
    end = len(local) - 1
    index = 1
    while index < end:
        char = local[index]
        if char == "\\":
            index += 1
            if index >= end or not 32 <= ord(local[index]) <= 126:
                return "the local part has a backslash not followed by a printable character"
        elif char == '"':
            return "the local part has text after its closing quote"
        elif not (32 <= ord(char) <= 126 or _is_utf8_text(char)):
            return f"the local part has {_quoted(char)} inside quotes"
        index += 1
    if end < 1 or local[end] != '"':
        return "the local part has text after its closing quote"
    return None


def _domain_problem(domain: str) -> str | None:
    if not domain:
        return "the domain after '@' is empty"
    if domain[0] == "[":
        return _literal_problem(domain)
    if _octets(domain) > MAX_DOMAIN_OCTETS:
        return f"the domain is longer than {MAX_DOMAIN_OCTETS} octets"
    for label in domain.split("."):
        if not label:
            return "the domain has an empty label (a dot at an end, or two in a row)"
        for char in label:
            if char not in _LDH and not _is_utf8_text(char):
                return f"the domain has {_quoted(char)} (only letters, digits, '-' and '.')"
        if label[0] == "-" or label[-1] == "-":
            return f"the domain label {_quoted(label)} starts or ends with '-'"
        if _label_octets(label) > MAX_LABEL_OCTETS:
            return (f"the domain label {_quoted(label[:20])}... is longer than"
                    f" {MAX_LABEL_OCTETS} octets")
    return None


def _label_octets(label: str) -> int:
    """Length of a label on the wire: an internationalised one counts as its A-label."""
    if label.isascii():
        return len(label)
    try:
        return len("xn--") + len(label.encode("punycode"))
    except UnicodeError:
        return _octets(label)


def _literal_problem(domain: str) -> str | None:
    """Address literals: ``[IPv4]`` and ``[IPv6:...]``, checked by ``ipaddress``."""
    if domain[-1] != "]" or len(domain) < 3:
        return "the address literal is empty or not closed with ']'"
    content = domain[1:-1]
    if not content.isascii() or "[" in content or "]" in content:
        return f"the address literal {_quoted(domain)} is not an IP address"
    import ipaddress  # rare: kept off the start-up path of every submission (issue 2)

    try:
        if content[:5].lower() == "ipv6:":
            if "%" in content:
                return "the IPv6 address literal has a zone id"
            ipaddress.IPv6Address(content[5:])
        else:
            ipaddress.IPv4Address(content)
    except ValueError:
        return f"the address literal {_quoted(domain)} is not [IPv4] or [IPv6:address]"
    return None


# --------------------------------------------------------------------------------------
# RFC 5322 address lists: tokenizer


@frozen
class _Token:
    """One lexical unit of a field value; ``text`` is unfolded, ``start:end`` the source."""

    kind: str  # "atom", "quoted", "literal", or the special character itself
    text: str
    start: int
    end: int


def _list_error(value: str, position: int, problem: str) -> DataError:
    return DataError(
        f"invalid address list {_excerpt(value)}: {problem} at {_excerpt(value[position:])}",
        hint="check the To:, Cc: and Bcc: headers",
    )


def _after_line_break(value: str, index: int) -> int:
    """Index after a line break at ``index``; only folding (a blank follows) is allowed."""
    if value[index] == "\r":
        if index + 1 >= len(value) or value[index + 1] != "\n":
            raise _list_error(value, index, "a carriage return without a line feed")
        after = index + 2
    else:
        after = index + 1
    if after < len(value) and value[after] not in " \t":
        raise _list_error(value, index, "a line break that does not fold the header")
    return after


def _skip_comment(value: str, index: int) -> int:
    """Index after the comment opening at ``index``; comments nest (RFC 5322 3.2.2)."""
    depth = 0
    start = index
    while index < len(value):
        char = value[index]
        if char == "\\":
            if index + 1 >= len(value) or value[index + 1] in "\r\n":
                break
            index += 2
            continue
        if char in "\r\n":
            index = _after_line_break(value, index)
            continue
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                return index + 1
        index += 1
    raise _list_error(value, start, "a comment '(' that is never closed")


def _read_quoted(value: str, index: int) -> _Token:
    """The quoted string opening at ``index``, kept with its quotes and escapes, unfolded."""
    start = index
    parts = ['"']
    index += 1
    while index < len(value):
        char = value[index]
        if char == "\\":
            if index + 1 >= len(value) or value[index + 1] in "\r\n":
                break
            parts.append(value[index : index + 2])
            index += 2
            continue
        if char in "\r\n":
            index = _after_line_break(value, index)
            continue
        parts.append(char)
        index += 1
        if char == '"':
            return _Token("quoted", "".join(parts), start, index)
    raise _list_error(value, start, 'a quoted string that is never closed with "')


def _read_literal(value: str, index: int) -> _Token:
    """The domain literal opening at ``index``, with blanks and folding removed."""
    start = index
    parts = ["["]
    index += 1
    while index < len(value):
        char = value[index]
        if char in "\r\n":
            index = _after_line_break(value, index)
            continue
        index += 1
        if char in " \t":
            continue
        if char in "[\\":
            break
        parts.append(char)
        if char == "]":
            return _Token("literal", "".join(parts), start, index)
    raise _list_error(value, start, "a domain literal '[' that is never closed with ']'")


def _tokenize(value: str) -> list[_Token]:
    """Split a field value into tokens, dropping blanks, folding and comments."""
    tokens: list[_Token] = []
    index = 0
    length = len(value)
    if "\0" in value:
        raise _list_error(value, value.index("\0"), "a NUL character")
    while index < length:
        char = value[index]
        if char in " \t":
            index += 1
        elif char in "\r\n":
            index = _after_line_break(value, index)
        elif char == "(":
            index = _skip_comment(value, index)
        elif char == '"':
            token = _read_quoted(value, index)
            tokens.append(token)
            index = token.end
        elif char == "[":
            token = _read_literal(value, index)
            tokens.append(token)
            index = token.end
        elif char in _LIST_SPECIALS:
            tokens.append(_Token(char, char, index, index + 1))
            index += 1
        elif _is_atext(char):
            end = index + 1
            while end < length and _is_atext(value[end]):
                end += 1
            tokens.append(_Token("atom", value[index:end], index, end))
            index = end
        elif char == ")":
            raise _list_error(value, index, "a ')' without a '('")
        elif char == "]":
            raise _list_error(value, index, "a ']' without a '['")
        else:
            raise _list_error(value, index, f"the character {_quoted(char)} outside quotes")
    return tokens


# --------------------------------------------------------------------------------------
# RFC 5322 address lists: recursive-descent parser


_SEPARATORS = frozenset({",", ";"})
_WORDS = frozenset({"atom", "quoted"})


class _ListParser:
    """address-list over tokens; collects addr-specs in order.

    Leniencies, each seen in real mail: empty elements and trailing commas (obs-addr-
    list), ';' between addresses outside a group (Outlook users type it), a group
    whose ';' is missing at the end of the field or not followed by a comma, and any
    words before '<' as the display name (some clients write ``a@x <a@x>`` unquoted).
    """

    def __init__(self, value: str, tokens: list[_Token]) -> None:
        self.value = value
        self.tokens = tokens
        self.pos = 0
        self.found: list[str] = []

    def _kind(self) -> str | None:
        return self.tokens[self.pos].kind if self.pos < len(self.tokens) else None

    def _error(self, tokens: Sequence[_Token], problem: str) -> DataError:
        raw = self.value[tokens[0].start : tokens[-1].end] if tokens else self.value
        return DataError(
            f"invalid address {_excerpt(raw.strip())} in address list: {problem}",
            hint="write Name <user@example.com>, separated by commas",
        )

    def parse(self) -> tuple[str, ...]:
        while self._kind() is not None:
            if self._kind() in _SEPARATORS:
                self.pos += 1
                continue
            self._address(in_group=False)
        return tuple(self.found)

    def _address(self, *, in_group: bool) -> None:
        """address = mailbox / group, followed by a separator or the end."""
        start = self.pos
        while self._kind() not in ("<", ">", ":", ",", ";", None):
            self.pos += 1
        head = self.tokens[start : self.pos]
        kind = self._kind()
        if kind == "<":
            self.pos += 1
            self._angle_address(head)
        elif kind == ":":
            if in_group:
                raise self._error(head, "a group inside a group")
            self._group(head)
            return
        elif kind == ">":
            raise self._error(self.tokens[start : self.pos + 1], "a '>' without a '<'")
        else:
            self.found.append(self._addr_spec(head))
        if self._kind() not in (",", ";", None):
            raise self._error(self.tokens[start : self.pos + 1], "text after the address")

    def _group(self, name: Sequence[_Token]) -> None:
        """group = display-name ":" [mailbox-list] ";" (the ';' may be missing at the end)."""
        if not name:
            raise self._error(self.tokens[self.pos : self.pos + 1], "a ':' without a group name")
        if any(token.kind not in _WORDS and token.kind != "." for token in name):
            raise self._error(name, "a group name must be words (quote it)")
        self.pos += 1
        while self._kind() is not None:
            if self._kind() == ";":
                self.pos += 1
                return
            if self._kind() == ",":
                self.pos += 1
                continue
            self._address(in_group=True)

    def _angle_address(self, display_name: Sequence[_Token]) -> None:
        """angle-addr = "<" [obs-route] addr-spec ">"; the display name is not checked."""
        opening = self.pos - 1
        start = self.pos
        while self._kind() not in (">", "<", None):
            self.pos += 1
        inner = self.tokens[start : self.pos]
        whole = [*display_name, *self.tokens[opening : self.pos + 1]]
        if self._kind() == "<":
            raise self._error(whole, "a '<' inside angle brackets")
        if self._kind() != ">":
            raise self._error(whole, "a '<' that is never closed with '>'")
        self.pos += 1
        if inner and inner[0].kind == "@":
            colon = next((i for i, token in enumerate(inner) if token.kind == ":"), None)
            if colon is None:
                raise self._error(whole, "a source route without ':'")
            inner = inner[colon + 1 :]
        if not inner:
            raise self._error(whole, "an empty address '<>'")
        self.found.append(self._addr_spec(inner))

    def _addr_spec(self, tokens: Sequence[_Token]) -> str:
        """addr-spec = local-part ["@" domain]; a bare local part is a local recipient."""
        ats = sum(1 for token in tokens if token.kind == "@")
        if ats > 1:
            raise self._error(tokens, "more than one '@' outside quotes")
        if ats == 0 and sum(1 for token in tokens if token.kind in _WORDS) > 1 and not any(
            token.kind == "." for token in tokens
        ):
            raise self._error(tokens, "words that are not an address (a name needs <address>)")
        local, index = self._dotted(tokens, 0, _WORDS, "local part")
        address = local
        if index < len(tokens) and tokens[index].kind == "@":
            index += 1
            if index < len(tokens) and tokens[index].kind == "literal":
                domain = tokens[index].text
                index += 1
            else:
                domain, index = self._dotted(tokens, index, frozenset({"atom"}), "domain")
            address = f"{local}@{domain}"
        if index < len(tokens):
            raise self._error(tokens, "not a single address")
        problem = _envelope_problem(address)
        if problem is not None:
            raise self._error(tokens, problem)
        return address

    def _dotted(
        self, tokens: Sequence[_Token], index: int, kinds: frozenset[str], what: str
    ) -> tuple[str, int]:
        """word *("." word), joined by dots without the blanks between them."""
        parts: list[str] = []
        while True:
            if index >= len(tokens) or tokens[index].kind not in kinds:
                raise self._error(tokens, f"the {what} is missing or has an empty part")
            parts.append(tokens[index].text)
            index += 1
            if index < len(tokens) and tokens[index].kind == ".":
                index += 1
                continue
            return ".".join(parts), index


def parse_address_list(value: str) -> tuple[str, ...]:
    """The addr-specs of an RFC 5322 address-list (a To:, Cc: or Bcc: value), in order.

    Display names, comments and group names are dropped; source routes too.  A
    quoted local part keeps its quotes.  Raises DataError naming the bad text.
    """
    return _ListParser(value, _tokenize(value)).parse()


def parse_recipient_argument(text: str) -> tuple[str, ...]:
    """The recipients that one command-line argument names, in order.

    sendmail reads each argument as an address list, and so does the C dma (it queued
    ``dma 'a@x,b@y'`` as one recipient ``a@x,b@y`` and sent two RCPTs): commas outside
    quotes and angle brackets separate addresses, ``<a@x>`` and ``Name <a@x>`` give
    ``a@x``, comments and group names are dropped.  A single address comes back as
    it is.  An argument that names no address (``''``, ``','``) is a DataError too.
    """
    addresses = parse_address_list(text)
    if not addresses:
        raise DataError(
            f"invalid address {_excerpt(text)}: it names no recipient", hint=_ADDRESS_HINT
        )
    return addresses


# --------------------------------------------------------------------------------------
# Rendering


def format_address_list(entries: Sequence[tuple[str | None, str]]) -> str:
    """Render (display name or None, addr-spec) pairs as a field value.

    Display names are quoted when they are not plain words; ``parse_address_list``
    gives the addr-specs back.  UTF-8 stays as it is (RFC 6532); folding long values
    is the header writer's job.
    """
    return ", ".join(_format_mailbox(name, address) for name, address in entries)


def _format_mailbox(name: str | None, address: str) -> str:
    parse_envelope_address(address)
    if not name:
        return address
    return f"{_format_phrase(name)} <{address}>"


def _format_phrase(name: str) -> str:
    for char in name:
        category = unicodedata.category(char)
        if (category == "Cc" and char != "\t") or category in ("Cs", "Zl", "Zp"):
            raise DataError(
                f"invalid display name {_excerpt(name)}: it contains {_quoted(char)}",
                hint="a display name is one line of text",
            )
    words = name.split(" ")
    if all(word and all(_is_atext(char) for char in word) for word in words):
        return name
    escaped = name.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'
