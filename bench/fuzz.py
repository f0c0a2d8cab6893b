"""Fuzzing beyond CI's budget (issue 7): every parser in core, the ``-bs`` server machine and
the queue runner, 10^5 generated inputs each, and any exception that is not our own error.

Run it (the full run takes tens of minutes; run it in the background and read its log):

    .venv/bin/python bench/fuzz.py --quick                  # a small count: does it work?
    nohup .venv/bin/python bench/fuzz.py > /tmp/fuzz.log 2>&1 &
    .venv/bin/python bench/fuzz.py --targets config,queue --count 20000
    .venv/bin/python bench/fuzz.py --replay aliases FINDING.bin --input-seed N

How: a mutation fuzzer seeded from good inputs (a handful of valid files, sessions and
messages per target), written here rather than hypothesis or atheris.  Hypothesis
already runs our properties in CI; its per-example overhead and its bias towards
small inputs make 10^5 examples per target slow and shallow, and it has no notion of
a corpus to mutate.  Atheris needs a libFuzzer-enabled clang build to install and
gives coverage guidance at many times the cost per input.  A mutator over good
inputs reaches deep states at once (a valid config with one key broken, a session
that is one byte away from smuggling) and runs 10^3 to 10^5 inputs a second.  Cheap
guidance instead of coverage: an input that produced an error message not seen
before, or that was accepted, may join the corpus and be mutated further.  Every
input has its own seed (``--input-seed``), so a finding replays exactly.

What counts as a finding, per input:
- ``foreign``: an exception that is not a DmaError (a crash; the traceback is kept);
- ``software``: a SoftwareError (our error class for our own bugs) from a target that
  was driven correctly, so it should never happen;
- ``invariant``: a documented property broken (a round trip, a reply line, a count);
- ``slow``: one input over ``--slow`` seconds (the alias-chain kind of quadratic);
- ``hang``: one input over ``--timeout`` seconds, interrupted.
Findings are grouped by (target, kind, exception type, the innermost frame): each
group keeps its smallest input, saved under ``--out`` as ``<target>-<n>.bin`` with a
``.txt`` beside it (type, message, traceback, input shown, how to replay).

The queue target builds temporary spools (in /dev/shm when it exists, so fsync is
cheap) holding random Q and M files (mutated from good ones: keys broken, Latin-1
octets, an ``ID:`` naming another item, long lines, NULs, symlinks, directories, a
rare FIFO) beside a few good items for the local user, with a LOCALONLY config (no
network: remote recipients bounce).  Each round runs in-process like ``dma -q``
(``Spool.clean``, ``item_ids``, ``QueueRun.run``) and ``mailq``/``-bj`` listings, and
every ``--subprocess-every``-th round is a real ``dma -q -v`` subprocess instead.
Checks: nothing escapes the run, no non-DmaError is caught by the per-item guard
(the guard keeps the run going, but each such catch is a bug: its traceback is
recorded), no "Traceback" or "internal error" on a subprocess's stderr, exit 0, and
each good item delivered exactly once.  The count is random Q/M pairs.

The dates module formats only (no parser): its target feeds random moments to the
formatters.  Output: a table per target (inputs, wall time, rate, findings) on
stdout and in ``summary.json`` under ``--out``; exit status 1 when anything was found.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import itertools
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from dma.core.credentials import Credentials
from dma.core.errors import DmaError, SoftwareError

REPO = Path(__file__).resolve().parent.parent

FULL_COUNT = 100_000
QUICK_COUNT = 300
MAX_INPUT = 64 * 1024
USER = __import__("pwd").getpwuid(os.getuid()).pw_name
MAILNAME = "fuzz.example"


class Invariant(AssertionError):
    """A target found a documented property broken."""


class FuzzTimeout(BaseException):
    """One input ran longer than --timeout (a BaseException so no handler swallows it)."""


# --- findings --------------------------------------------------------------------------


@dataclass
class Finding:
    target: str
    kind: str  # foreign, software, invariant, slow, hang
    error_type: str
    message: str
    where: str
    trace: str
    data: bytes
    input_seed: int
    hits: int = 1
    extra: dict[str, Any] = field(default_factory=dict)


class Findings:
    """Findings grouped by signature, each keeping its smallest input, written as they come."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.groups: dict[tuple[str, str, str, str], Finding] = {}
        self.files: dict[tuple[str, str, str, str], str] = {}

    def add(self, finding: Finding) -> None:
        key = (finding.target, finding.kind, finding.error_type, finding.where)
        known = self.groups.get(key)
        if known is not None:
            known.hits += 1
            # keep the smallest input; an empty one (a whole queue round) only when no other
            if known.data and (not finding.data or len(finding.data) >= len(known.data)):
                return
            finding.hits = known.hits
        self.groups[key] = finding
        if key not in self.files:
            self.files[key] = f"{finding.target}-{len(self.files) + 1}"
        self._write(self.files[key], finding)

    def _write(self, stem: str, finding: Finding) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / f"{stem}.bin").write_bytes(finding.data)
        shown = repr(finding.data[:3000]) + (" ..." if len(finding.data) > 3000 else "")
        if not finding.data:
            shown = "(no single input: see the round files)"
        text = [
            f"target:     {finding.target}",
            f"kind:       {finding.kind}",
            f"exception:  {finding.error_type}: {finding.message}",
            f"where:      {finding.where}",
            f"hits:       {finding.hits} (this is the smallest input seen)",
            f"input:      {len(finding.data)} octets, {stem}.bin; input seed {finding.input_seed}",
            (f"replay:     .venv/bin/python bench/fuzz.py --replay {finding.target} "
             f"{self.out / (stem + '.bin')} --input-seed {finding.input_seed}")
            if finding.target != "queue" else
            f"replay:     the round's files are saved (round seed {finding.input_seed})",
            *(f"{key}: {value}" for key, value in finding.extra.items()),
            "",
            "input shown:",
            shown,
            "",
            finding.trace,
        ]
        (self.out / f"{stem}.txt").write_text("\n".join(text), errors="backslashreplace")

    def rewrite(self) -> None:
        """Write every group again, so each .txt shows its final hit count."""
        for key, finding in self.groups.items():
            self._write(self.files[key], finding)

    def of(self, target: str) -> list[Finding]:
        return [f for f in self.groups.values() if f.target == target]


def innermost_frame(error: BaseException) -> str:
    """``file:line`` of the innermost frame inside the repository (else the innermost)."""
    frames = traceback.extract_tb(error.__traceback__)
    ours = [f for f in frames if str(REPO) in f.filename and "/bench/" not in f.filename]
    frame = (ours or frames or [None])[-1]
    if frame is None:
        return "?"
    return f"{os.path.relpath(frame.filename, REPO)}:{frame.lineno}"


# --- the mutator -------------------------------------------------------------------------

COMMON_TOKENS = [
    b"\r", b"\n", b"\r\n", b"\0", b"\t", b" ", b"\xff", b"\xe9", b"\x80", b"\xc3", "é".encode(),
    "☃".encode(), "\U0001f4e7".encode(), b"\xed\xa0\x80", b'"', b"\\", b"<", b">", b"@", b",",
    b":", b";", b"(", b")", b"[", b"]", b"=", b".", b"..", b"#", b"|", b"/", b"-", b"%", b"!",
    b"\x7f", b"\x1b", b"\x0b", b"\x0c", b"0", b"-1", b"99999999999999999999", b"1e9",
    b"\r\n.\r\n", b"\n.\n", b"\n.\r\n", b"\r\n.\n",
]
INTERESTING_NUMBERS = [b"0", b"-1", b"1", b"255", b"65535", b"65536", b"2147483648",
                       b"9223372036854775808", b"999999999999999999999999", b"00", b"1.5", b"0x10"]


class Mutator:
    """Mutates inputs of a corpus that grows with inputs that showed something new."""

    def __init__(self, seeds: list[bytes], tokens: list[bytes], max_size: int) -> None:
        self.corpus = list(seeds) or [b""]
        self.tokens = tokens + COMMON_TOKENS
        self.max_size = max_size
        self.seen: set[str] = set()

    def generate(self, rng: random.Random) -> bytes:
        roll = rng.random()
        if roll < 0.04:
            return rng.randbytes(rng.randrange(0, 300))
        if roll < 0.08:
            return b"".join(rng.choice(self.tokens) for _ in range(rng.randrange(1, 60)))
        data = bytearray(rng.choice(self.corpus))
        for _ in range(rng.choice((1, 1, 1, 2, 2, 3, 4, 6, 10))):
            self._mutate(data, rng)
        return bytes(data[: self.max_size])

    def learn(self, data: bytes, outcome: str, rng: random.Random) -> None:
        """Keep ``data`` for mutation when its outcome is new (or, rarely, when accepted)."""
        if outcome not in self.seen:
            self.seen.add(outcome)
        elif not (outcome == "ok" and rng.random() < 0.02):
            return
        if len(self.corpus) < 3000:
            self.corpus.append(data)
        else:
            self.corpus[rng.randrange(len(self.corpus))] = data

    def _mutate(self, data: bytearray, rng: random.Random) -> None:
        size = len(data)
        op = rng.randrange(15)
        at = rng.randrange(size + 1)
        if op == 0 and size:  # flip a bit
            index = rng.randrange(size)
            data[index] ^= 1 << rng.randrange(8)
        elif op == 1 and size:  # replace a byte
            data[rng.randrange(size)] = rng.randrange(256)
        elif op in (2, 3, 4):  # insert a token
            data[at:at] = rng.choice(self.tokens)
        elif op == 5 and size:  # delete a range
            end = min(size, at + rng.randrange(1, 40))
            del data[at:end]
        elif op == 6 and size:  # duplicate a range
            start = rng.randrange(size)
            piece = data[start : start + rng.randrange(1, 80)]
            data[at:at] = piece * rng.choice((1, 2, 3, 50))
        elif op == 7:  # splice in part of another corpus entry
            other = rng.choice(self.corpus)
            if other:
                start = rng.randrange(len(other))
                data[at:at] = other[start : start + rng.randrange(1, 200)]
        elif op == 8:  # line-level: swap, duplicate or delete a line
            lines = bytes(data).split(b"\n")
            if len(lines) > 1:
                i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
                choice = rng.randrange(3)
                if choice == 0:
                    lines[i], lines[j] = lines[j], lines[i]
                elif choice == 1:
                    lines.insert(j, lines[i])
                else:
                    del lines[i]
                data[:] = b"\n".join(lines)
        elif op == 9:  # a number becomes an interesting one
            numbers = list(re.finditer(rb"[0-9]+", bytes(data)))
            if numbers:
                match = rng.choice(numbers)
                data[match.start() : match.end()] = rng.choice(INTERESTING_NUMBERS)
        elif op == 10 and rng.random() < 0.15:  # a long run (long lines, big fields)
            token = rng.choice((b"x", b"a", b" ", b".", b"\xe9", b"=", b"a,", b"<", b'"'))
            data[at:at] = token * rng.choice((999, 1000, 1001, 4096, 70_000))
        elif op == 11 and size:  # change the case of a range
            end = min(size, at + rng.randrange(1, 30))
            piece = bytes(data[at:end])
            data[at:end] = piece.swapcase()
        elif op == 12:  # random bytes
            data[at:at] = rng.randbytes(rng.randrange(1, 8))
        elif op == 13 and size:  # truncate
            del data[rng.randrange(size) :]
        elif op == 14:  # a token at the start of a line
            starts = [0, *(m.end() for m in re.finditer(rb"\n", bytes(data)))]
            position = rng.choice(starts)
            data[position:position] = rng.choice(self.tokens)


def outcome_key(error: BaseException | None) -> str:
    """A cheap novelty key: the error's type and its message without digits and quotes."""
    if error is None:
        return "ok"
    text = re.sub(r"[0-9]+|'[^']*'|\"[^\"]*\"", "", str(error))[:60]
    return f"{type(error).__name__}:{text}"


def text_of(data: bytes) -> str:
    """Bytes as the shell reads a text file: UTF-8 with surrogateescape."""
    return data.decode("utf-8", "surrogateescape")


def chunks_of(data: bytes, rng: random.Random) -> list[bytes]:
    """``data`` cut at random places (sometimes whole, sometimes byte by byte)."""
    roll = rng.random()
    if roll < 0.3 or not data:
        return [data] if data else []
    if roll < 0.35 and len(data) < 2000:
        return [data[i : i + 1] for i in range(len(data))]
    cuts = sorted(rng.randrange(len(data) + 1) for _ in range(rng.randrange(1, 12)))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds) if b > a]


# --- the targets: pure parsers -----------------------------------------------------------

Run = Callable[[bytes, random.Random], None]


@dataclass
class Target:
    name: str
    about: str
    seeds: list[bytes]
    tokens: list[bytes]
    run: Run
    max_size: int = MAX_INPUT


def target_config() -> Target:
    from dma.core.config import (
        KEYS,
        key_line,
        mailname_from_file,
        nameserver_address,
        parse_config,
        render_config,
    )

    def run(data: bytes, rng: random.Random) -> None:
        text = text_of(data)
        mailname_from_file(text.split("\n", 1)[0])
        config = parse_config(text, "fuzz.conf")
        key_line(text, "fuzz.conf", rng.choice([s.field for s in KEYS.values() if s.field]))
        nameserver_address(config)
        again = parse_config(render_config(config), "rendered.conf")
        if again != config:
            raise Invariant(f"parse_config(render_config(c)) != c: {again} vs {config}")

    seeds = [
        b"SMARTHOST mail.example.com\nPORT 587\nSECURETRANSFER\nSTARTTLS\n",
        b"# comment\nALIASES /etc/aliases\nSPOOLDIR /var/spool/dma\nAUTHPATH /etc/dma/auth.conf\n"
        b"CERTFILE /etc/ssl/c.pem\nCAFILE /etc/ssl/ca.pem\nMAILNAME mail.example\n"
        b"MASQUERADE john@\nDEFER\nFULLBOUNCE\nNULLCLIENT\nSMARTHOST relay\n",
        b"SECURETRANSFER\nVERIFYCERT\nOPPORTUNISTIC_TLS\nSTARTTLS\nFINGERPRINT "
        + b"ab:" * 31 + b"ab\nINSECURE\nNOVERIFYCERT\n",
        b"LOCALONLY\nMAILDIR /var/mail\nNAMESERVER [::1]:5353\nMAXCONNECTIONS 10\n"
        b"QUEUELIFETIME 1h30m\nTIMEOUT 30s\nSECURE\n",
        b"MAILNAME /etc/mailname\nNAMESERVER 127.0.0.1\nSECURETRANS\n",
        b"smarthost  x\r\nPORT\t25\r\n\r\n",
    ]
    tokens = [s.name.encode() for s in KEYS.values()] + [b"on", b"yes", b"5d", b"[::1]", b":53"]
    return Target("config", "dma.conf: parse_config, render round trip, key_line, MAILNAME line",
                  seeds, tokens, run)


def target_authconf() -> Target:
    from dma.core.authconf import lookup, parse_auth, render_auth

    def run(data: bytes, rng: random.Random) -> None:
        table = parse_auth(text_of(data), "auth.conf")
        for entry in table.entries[:5]:
            lookup(table, entry.host)
        lookup(table, text_of(rng.randbytes(6)))
        try:
            rendered = render_auth(table)
        except DmaError:
            return  # an entry no line can express: refused, as documented
        if parse_auth(rendered, "auth.conf") != table:
            raise Invariant("parse_auth(render_auth(t)) != t")

    seeds = [
        b"user|mail.example.com:secret\n# c\nother|relay:pa:ss|w\n",
        b"jd|smtp.example.org:p\xc3\xa9\r\nx|h:\n",
        b"a|b:c\na|b:d\n",
    ]
    return Target("authconf", "auth.conf: parse_auth, lookup, render round trip", seeds,
                  [b"|", b":", b"#"], run)


def target_aliases() -> Target:
    from dma.core.aliases import expand_alias, parse_aliases, refused_targets, table_problems
    from dma.core.envelope import local_name

    users = {USER, "root", "bob", "alice"}

    def run(data: bytes, rng: random.Random) -> None:
        table = parse_aliases(text_of(data), "aliases")
        refused_targets(table)

        def ours(address: str) -> str | None:
            return local_name(address, MAILNAME)

        table_problems(table, is_user=lambda name: name in users, local_name=ours)
        for entry in table.entries[:5]:
            with contextlib.suppress(DmaError):
                expand_alias(entry.name, table, is_user=lambda n: n in users, local_name=ours)
        with contextlib.suppress(DmaError):
            expand_alias("nosuch", table, is_user=lambda n: n in users, local_name=ours)

    chain = b"".join(b"a%d: a%d\n" % (i, i + 1) for i in range(60)) + b"a60: root\n"
    seeds = [
        b"# aliases\npostmaster: root\nstaff: bob, alice@example.org, \"jd\"@example.de\n"
        b"ops: staff,\n  root\n*: catchall@example.net\n",
        b"loop: loop2\nloop2: loop\nbad: |/bin/sh\nfile: /tmp/x\ninc: :include:/etc/x\n",
        b"r\xc3\xa9: root\nmulti: a, b, c\n\tcontinued\nempty:\n",
        chain,
    ]
    return Target("aliases", "aliases: parse, refused targets, table_problems, expand", seeds,
                  [b": ", b", ", b"\n  ", b"|", b":include:", b"*", b"root", b"postmaster"], run)


ADDRESS_SEEDS = [
    b"user@example.com", b"<user@example.com>", b'"john doe"@example.org',
    b"j\xc3\xb6rg@ex\xc3\xa4mple.de",
    b"root", b"a@[192.0.2.1]", b"a@[IPv6:::1]", b"@route,@x:u@h", b"user@localhost",
    b"a,b@x.org,root", b"\"a,b\"@x.org", b"user@fuzz.example.", b"x@xn--bcher-kva.example",
    b"<>", b"user+tag@sub.domain.example", b"a@b@c",
]


def target_addresses() -> Target:
    from dma.core.addresses import (
        is_valid_mailbox,
        needs_smtputf8,
        parse_envelope_address,
        split_address,
        unquoted_positions,
    )
    from dma.core.aliases import parse_aliases
    from dma.core.envelope import envelope_sender, local_name, resolve_recipients
    from dma.core.routing import next_hop, normalise_domain, recipient_parts

    aliases = parse_aliases("postmaster: root\nstaff: bob, x@example.org\n", "aliases")

    def run(data: bytes, rng: random.Random) -> None:
        text = text_of(data)
        split_address(text)
        is_valid_mailbox(text)
        needs_smtputf8(text)
        unquoted_positions(text, rng.choice(",@:<"))
        parts = recipient_parts(text)
        for part in parts[:4]:
            local_name(part, MAILNAME)
            with contextlib.suppress(DmaError):
                next_hop(part, smarthost=None, port=25)
            domain = split_address(part)[1]
            if domain:
                with contextlib.suppress(DmaError):
                    normalise_domain(domain, part)
        with contextlib.suppress(DmaError):
            envelope_sender(text, None, USER, MAILNAME, rng.choice([None, "john@", "@host"]))
        with contextlib.suppress(DmaError):
            envelope_sender(None, text, USER, MAILNAME, text if rng.random() < 0.2 else None)
        with contextlib.suppress(DmaError):
            resolve_recipients((text,), mailname=MAILNAME, aliases=aliases,
                               is_user=lambda name: name in (USER, "bob"),
                               nullclient=rng.random() < 0.1)
        parse_envelope_address(text)

    return Target("addresses", "envelope addresses: parse, split, routing, local names, sender",
                  ADDRESS_SEEDS, [b"@", b"<", b">", b'"', b"[", b"]", b"IPv6:", b".."], run)


def target_address_lists() -> Target:
    from dma.core.addresses import (
        format_address_list,
        parse_address_list,
        parse_recipient_argument,
    )

    def run(data: bytes, rng: random.Random) -> None:
        text = text_of(data)
        with contextlib.suppress(DmaError):
            parse_recipient_argument(text)
        found = parse_address_list(text)
        if found:
            again = parse_address_list(format_address_list([(None, a) for a in found]))
            if again != found:
                raise Invariant(f"format/parse round trip changed {found!r} to {again!r}")

    seeds = [
        b"Joe Q. Public <john.q.public@example.com>, Mary Smith <mary@x.test>, jdoe@example.org",
        b"A Group:Ed Jones <c@a.test>,joe@where.test,John <jdoe@one.test>;, Undisclosed:;",
        b"\"Giant; \\\"Big\\\" Box\" <sysservices@example.net>",
        b"Pete(A nice \\) chap) <pete(his account)@silly.test(his host)>",
        b"=?utf-8?q?J=C3=B6rg?= <j@x.de>, \r\n\tother@y.de",
        b"bob, root, x@[127.0.0.1]",
    ]
    return Target("address_lists", "RFC 5322 address lists and -t/argv recipient lists", seeds,
                  [b",", b";", b":", b"(", b")", b"<", b">", b"=?utf-8?q?", b"?="], run)


def target_lines() -> Target:
    from dma.core.lines import normalise_lines

    def run(data: bytes, rng: random.Random) -> None:
        ignore_dots = rng.random() < 0.7
        max_piece = rng.choice((1, 3, 64, 1000, 64 * 1024))
        pieces = []
        for piece in normalise_lines(chunks_of(data, rng), ignore_dots=ignore_dots,
                                     max_piece=max_piece):
            if not piece or b"\r" in piece or b"\n" in piece[:-1]:
                raise Invariant(f"bad piece {piece[:80]!r}")
            if len(piece) > max_piece + 1:
                raise Invariant(f"piece of {len(piece)} octets over max_piece {max_piece}")
            pieces.append(piece)
        if ignore_dots and b"\0" not in data:
            expected = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            if expected and not expected.endswith(b"\n"):
                expected += b"\n"
            if b"".join(pieces) != expected:
                raise Invariant("the joined pieces are not the input with uniform line ends")

    seeds = [b"Subject: x\r\n\r\nbody\r\n.\r\n", b"a\rb\nc\r\n\r\n", b"line\n.\nafter\n",
             b"x" * 3000 + b"\r\n", b"no end"]
    return Target("lines", "normalise_lines: any chunking, piece sizes, dot end, NUL", seeds,
                  [b"\r", b"\n", b"."], run)


def _stamp() -> Any:
    from dma.core.headers import Stamp

    return Stamp(queue_id="17c0a1b2c3d4e5f60000", sender="app@fuzz.example", username=USER,
                 uid=0, mailname=MAILNAME, system_hostname="host.fuzz.example",
                 date="Mon, 1 Jan 2024 00:00:00 +0000", message_id="<x.y@fuzz.example>",
                 full_name=None)


MESSAGE_SEEDS = [
    b"From: a@x.example\nTo: b@y.example, Carol <c@z.example>\nCc: d@w.example\n"
    b"Bcc: secret@x.example,\n  other@x.example\nSubject: hello\n\nbody\n.dot\n",
    b"From sender@x Mon Jan  1 00:00:00 2024\nSubject: from line\n\n>From here\nFrom there\n",
    b"MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"b1\"\n\npre\n--b1\n"
    b"Content-Type: text/plain\nContent-Transfer-Encoding: 8bit\n\n" + b"x" * 1200 + b"\n"
    b"--b1\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\n"
    b"AAAA\n--b1--\nepilogue\n",
    b"Subject: " + b"long " * 400 + b"\nTo: " + b"a@b.example, " * 120 + b"\n\nshort\n",
    b"no header line at all\n\nbody\n",
    b"Subject: =?utf-8?q?J=C3=B6rg?=\nX-Latin: caf\xe9\n\n\xe9t\xe9\n",
    b"Subject: x\nmalformed line\nTo: t@x.example\n\nbody",
]


def target_headers() -> Target:
    from dma.core.headers import HeaderStep
    from dma.core.lines import normalise_lines

    def run(data: bytes, rng: random.Random) -> None:
        step = HeaderStep(_stamp(), collect_recipients=rng.random() < 0.5,
                          field_limit=rng.choice((200, 64 * 1024, 1024 * 1024)))
        out: list[bytes] = []
        for piece in normalise_lines(chunks_of(data, rng), ignore_dots=rng.random() < 0.5,
                                     max_piece=rng.choice((50, 1000, 64 * 1024))):
            if step.done:
                out.append(piece)
                continue
            result = step.feed(piece)
            out.extend(result.lines)
            if result.body:
                out.append(result.body)
        if not step.done:
            out.extend(step.finish())
        step.recipients  # noqa: B018 - the -t list is part of what is read
        for line in out:
            if b"\r" in line:
                raise Invariant(f"a CR in a spooled line {line[:80]!r}")

    return Target("headers", "HeaderStep over normalise_lines: fields, Bcc, -t, long lines",
                  MESSAGE_SEEDS, [b"To: ", b"Bcc: ", b"Cc: ", b"From ", b"\n ", b"\n\t", b": "],
                  run)


def target_longlines() -> Target:
    from dma.core.lines import normalise_lines
    from dma.core.longlines import find_long_parts, fold_header_line, reencode

    def run(data: bytes, rng: random.Random) -> None:
        data = data.replace(b"\0", b"")
        max_piece = rng.choice((100, 1000, 64 * 1024))
        lines = list(normalise_lines([data], ignore_dots=True, max_piece=max_piece))
        parts = find_long_parts(iter(lines))
        for line in reencode(iter(lines), parts):
            if not line.endswith(b"\n") or len(line) > 999 or b"\n" in line[:-1]:
                raise Invariant(f"re-encoded line of {len(line)} octets: {line[:80]!r}")
        for line in lines[:20]:
            if line.endswith(b"\n") and b":" in line[:80]:
                name = line.split(b":", 1)[0].decode("ascii", "replace")
                for folded in fold_header_line(line, name):
                    if len(folded) > 999:
                        raise Invariant(f"folded header line of {len(folded)} octets")

    return Target("longlines", "find_long_parts + reencode (MIME, QP), fold_header_line",
                  MESSAGE_SEEDS, [b"Content-Type: ", b"boundary=", b"--", b"quoted-printable"],
                  run)


def target_queuefile() -> Target:
    from dma.core.queuefile import (
        item_id_from_filename,
        one_line_error,
        parse_queue_file,
        parse_queue_item,
        render_queue_file,
    )

    def run(data: bytes, rng: random.Random) -> None:
        item_id_from_filename(text_of(data[:80]))
        one_line_error(text_of(data[:2000]))
        if rng.random() < 0.5:
            item = parse_queue_item(data, "17c0a1b2c3d4e5f6.0", "Q17c0a1b2c3d4e5f6.0")
        else:
            item = parse_queue_file(data, "Qfuzz")
        again = parse_queue_file(render_queue_file(item), "Qrendered")
        # X-Last-Error is written through one_line_error (controls, lone surrogates)
        if item.last_error is not None:
            item = dataclasses.replace(item, last_error=one_line_error(item.last_error))
        if again != item:
            raise Invariant(f"render/parse round trip changed {item!r} to {again!r}")

    return Target("queuefile", "Q files: parse_queue_file/item, render round trip, ids",
                  Q_SEEDS, Q_TOKENS, run)


Q_SEEDS = [
    b"ID: 17c0a1b2c3d4e5f6.0\nSender: a@x.example\nRecipient: b@y.example\n",
    b"ID: 17c0a1b2c3d4e5f6.0\nSender: \nRecipient: root\nX-Attempts: 3\nX-Next-Try: 1700000000\n"
    b"X-Last-Error: 451 4.3.0 try later\nX-DSN-Notify: SUCCESS,DELAY\nX-DSN-Ret: HDRS\n"
    b"X-DSN-Envid: q1+2B\nX-Pad:      \n",
    b"ID: 17c0a1b2c3d4e5f6.1\nSender: caf\xe9@x.example\nRecipient: r\xe9@y.example,root\n",
    b"ID: 17c0a1b2c3d4e5f6.2\r\nSender: <>\r\nRecipient: \"a,b\"@x.example\r\nUnknown: key\r\n",
]
Q_TOKENS = [b"ID: ", b"Sender: ", b"Recipient: ", b"X-Attempts: ", b"X-Next-Try: ",
            b"X-Last-Error: ", b"X-DSN-Notify: ", b"X-DSN-Ret: ", b"X-DSN-Envid: ", b"X-Pad: "]


def target_smtp_reply() -> Target:
    from dma.core.smtp_reply import RemoteProtocolError, ReplyParser, parse_ehlo

    def run(data: bytes, rng: random.Random) -> None:
        parser = ReplyParser()
        for chunk in chunks_of(data, rng):
            try:
                replies = parser.feed(chunk)
            except RemoteProtocolError:
                return
            for reply in replies:
                reply.text  # noqa: B018 - the joined text is what callers read
                if reply.code == 250:
                    parse_ehlo(reply)

    seeds = [b"250-mx.example\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-AUTH PLAIN LOGIN\r\n"
             b"250-AUTH=LOGIN\r\n250-STARTTLS\r\n250 8BITMIME\r\n", b"220 hi\r\n",
             b"550 5.1.1 no\n", b"250-a\r\n251 b\r\n", b"334 PDEuMkBteD4=\r\n"]
    return Target("smtp_reply", "server replies: ReplyParser in any chunking, parse_ehlo", seeds,
                  [b"250-", b"250 ", b"SIZE ", b"AUTH ", b"\r\n"], run)


def target_smtp_client() -> Target:
    from dma.core.smtp import (
        Closed,
        Envelope,
        MessageDone,
        Ready,
        ReadyForData,
        SessionFailed,
        SessionPolicy,
        SmtpClient,
        StartTls,
        Transmit,
    )

    password = "pa55-w0rd-secret"
    envelopes = [
        Envelope(sender="s@x.example", recipients=("a@y.example", "b@y.example"), size=40,
                 eight_bit=False),
        Envelope(sender="", recipients=("a@y.example",), size=0, eight_bit=True),
        Envelope(sender="s@x.example", recipients=("a@y.example", "jörg@z.example"),
                 size=40, eight_bit=True, dsn_notify="SUCCESS,DELAY", dsn_ret="FULL",
                 dsn_envid="q1 +="),
    ]
    body = [b"Subject: x\n", b"\n", b".dot\n", b"caf\xe9\n"]

    def run(data: bytes, rng: random.Random) -> None:
        policy = SessionPolicy(
            helo_name="client.example",
            starttls=rng.choice(["no", "required", "opportunistic"]),
            tls_active=rng.random() < 0.3,
            credentials=rng.choice([None, Credentials("user", password),
                                    Credentials("user", "tok", "oauth2")]),
            nonce="fyko+d2lbbFgONRv9qkxdawL",
            insecure=rng.random() < 0.5,
        )
        client = SmtpClient(policy)
        feed = chunks_of(data, rng)
        messages = rng.randrange(1, 3)
        events = []
        for _ in range(10_000):
            event = client.next_event()
            if event is None:
                client.receive_data(feed.pop(0) if feed else b"")
                continue
            events.append(event)
            if isinstance(event, StartTls):
                client.tls_established()
            elif isinstance(event, Ready | MessageDone):
                if messages and client.can_send_message:
                    messages -= 1
                    client.send_message(rng.choice(envelopes))
                else:
                    client.quit()
            elif isinstance(event, ReadyForData):
                for _chunk in client.send_data_lines(body):
                    pass
            elif isinstance(event, SessionFailed):
                client.quit()
            elif isinstance(event, Closed):
                if password in repr(events):
                    raise Invariant("the password appears in an event")
                return
            elif not isinstance(event, Transmit):
                pass
        raise Invariant("the SMTP client session did not end in 10000 events")

    seeds = [
        b"220 mx ESMTP\r\n250-mx\r\n250-PIPELINING\r\n250-STARTTLS\r\n"
        b"250-AUTH PLAIN LOGIN CRAM-MD5\r\n"
        b"250-8BITMIME\r\n250-SMTPUTF8\r\n250 DSN\r\n220 go\r\n250-mx\r\n250-AUTH CRAM-MD5\r\n250 "
        b"SIZE 100\r\n334 PDEuMkBteD4=\r\n235 ok\r\n250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n"
        b"250 queued\r\n221 bye\r\n",
        b"220 mx\r\n250 mx\r\n250 ok\r\n550 5.1.1 no\r\n250 ok\r\n354 go\r\n250 ok\r\n221 bye\r\n",
        b"220 mx\r\n250-mx\r\n250 AUTH LOGIN\r\n334 VXNlcm5hbWU6\r\n334 UGFzc3dvcmQ6\r\n"
        b"535 bad\r\n",
        b"421 4.7.0 busy\r\n",
    ]
    return Target("smtp_client", "the SMTP client machine under any server bytes and chunking",
                  seeds, [b"250-", b"250 ", b"334 ", b"354 ", b"421 ", b"\r\n"], run)


def target_cmdline() -> Target:
    from dma.core.cmdline import parse_command_line

    def run(data: bytes, rng: random.Random) -> None:
        program = rng.choice(["sendmail", "dma", "mailq", "newaliases", "/usr/sbin/sendmail",
                              "send-mail", "hoststat"])
        argv = [program, *text_of(data).split("\0")] if data else [program]
        parse_command_line(argv)

    seeds = [b"-bs", b"-t\0-f\0me@x.example\0-F\0Me Myself", b"-q30m", b"-qf", b"-q!", b"-qp5m",
             b"-bp\0-v", b"-N\0success,delay\0-R\0hdrs\0-V\0envid", b"-oi\0-odb\0--\0a@b.example",
             b"-C\0/etc/dma/dma.conf\0-D\0user", b"-Qd\0-qIabc", b"-bq\0-bj", b"-qRuser\0-qSfrom",
             b"-oem\0-B8BITMIME\0-L\0tag\0-bv\0root", b"-i\0-f<>\0a,b@x.example"]
    return Target("cmdline", "argv for sendmail/dma/mailq/newaliases: parse_command_line",
                  seeds, [b"\0", b"-", b"-q", b"-b", b"-o", b"-N", b"--"], run)


def target_durations() -> Target:
    from dma.core.durations import format_duration, parse_duration

    def run(data: bytes, rng: random.Random) -> None:
        seconds = parse_duration(text_of(data))
        if parse_duration(format_duration(seconds)) != seconds:
            raise Invariant(f"format/parse round trip changed {seconds}")

    return Target("durations", "-qTIME and QUEUELIFETIME durations", [b"30m", b"1h30m", b"5d",
                  b"120", b"2w3d4h5m6s"], [b"s", b"m", b"h", b"d", b"w"], run, max_size=200)


def target_mbox() -> Target:
    from dma.core.maildir import maildir_filename, with_size
    from dma.core.mbox import from_line, mbox_record, quote_line, unquote_line

    moment = datetime(2024, 1, 1, tzinfo=UTC)

    def run(data: bytes, rng: random.Random) -> None:
        lines = data.splitlines(keepends=True)
        for line in lines[:50]:
            if unquote_line(quote_line(line)) != line:
                raise Invariant(f"mbox quote/unquote changed {line[:80]!r}")
        sender = text_of(data[:60].split(b"\n")[0])
        from_line(sender, moment)
        if lines and not lines[-1].endswith(b"\n"):
            lines[-1] += b"\n"
        record = b"".join(mbox_record(iter(lines), sender, moment))
        if record.count(b"\nFrom ") != 0:
            raise Invariant("a 'From ' line inside an mbox record")
        host = text_of(data[:40]).replace("\0", "") or "h"
        with_size(maildir_filename(1, 2, 3, 4, host, "abc123"), len(data))

    return Target("mbox", "mbox records (From_ quoting round trip), Maildir names",
                  MESSAGE_SEEDS, [b"From ", b">From ", b">>From "], run)


def target_dates() -> Target:
    from dma.core.dates import ctime_date, rfc5322_date

    def run(data: bytes, rng: random.Random) -> None:
        span = 253_402_300_000 + 62_135_596_800  # year 1 .. 9999
        seconds = int.from_bytes(data[:8].ljust(8, b"\0"), "big") % span - 62_135_596_800
        minutes = int.from_bytes(data[8:10].ljust(2, b"\0"), "big") % (2 * 1439 + 1) - 1439
        try:
            moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds)
            moment = moment.astimezone(timezone(timedelta(minutes=minutes)))
        except (OverflowError, ValueError):
            return  # outside what datetime holds: no input the formatters can get
        text = rfc5322_date(moment)
        if "\n" in text or "\r" in text:
            raise Invariant(f"date with a line end {text!r}")
        ctime_date(moment)

    return Target("dates", "date formatters (no parser in dates): random moments and offsets",
                  [b"\0" * 10, b"\x00\x00\x00\x00\x65\x00\x00\x00\x00\x3c"], [], run, max_size=16)


# --- the -bs server machine ------------------------------------------------------------------

REPLY_LINE = re.compile(rb"[2-5][0-9]{2}[ -][\x20-\x7e]*\r\n")


def target_smtp_server() -> Target:
    from dma.core.smtp_server import (
        Closed,
        MessageEnd,
        MessageStart,
        NeedData,
        RcptTo,
        SmtpServer,
        Transmit,
    )

    def run(data: bytes, rng: random.Random) -> None:
        server = SmtpServer(rng.choice(["mail.example", "h\xe9st", ""]))
        feed = chunks_of(data, rng)
        output: list[bytes] = []
        ends = starts = 0
        for _ in range(200_000):
            event = server.next_event()
            if isinstance(event, Transmit):
                output.append(event.data)
            elif isinstance(event, NeedData):
                server.receive_data(feed.pop(0) if feed else b"")
            elif isinstance(event, RcptTo):
                if rng.random() < 0.8:
                    server.accept_recipient()
                else:
                    server.refuse_recipient(rng.choice((450, 550, 553)), "5.1.1 no\r\n250 x")
            elif isinstance(event, MessageStart):
                starts += 1
            elif isinstance(event, MessageEnd):
                ends += 1
                if rng.random() < 0.8:
                    server.accept_message(f"Q{ends}")
                else:
                    server.refuse_message(554, "5.6.0 refused")
            elif isinstance(event, Closed):
                break
        else:
            raise Invariant("the -bs session did not end")
        for line in b"".join(output).splitlines(keepends=True):
            if not REPLY_LINE.fullmatch(line) or len(line) > 512:
                raise Invariant(f"malformed reply line {line[:100]!r}")
        # Only CRLF.CRLF (or .CRLF first in the data) ends a message.
        if ends > data.count(b".\r\n"):
            raise Invariant(f"{ends} messages ended but the input holds fewer '.' CRLF")
        if ends > starts:
            raise Invariant("more MessageEnd than MessageStart")

    head = b"EHLO app.example\r\nMAIL FROM:<a@x.example> SIZE=10 BODY=8BITMIME\r\n" \
           b"RCPT TO:<b@y.example>\r\nRCPT TO:<root>\r\nDATA\r\n"
    seeds = [
        head + b"Subject: hi\r\n\r\n..dot\r\nbody\r\n.\r\nQUIT\r\n",
        head + b"hi\n.\r\nMAIL FROM:<boss@example.com>\r\nRCPT TO:<victim@example.net>\r\n"
        b"DATA\r\nforged\r\n.\r\nQUIT\r\n",
        head.replace(b"\r\n", b"\n") + b"lf only\n.\nQUIT\n",
        b"HELO c\r\nMAIL FROM:<>\r\nRCPT TO:<x@y>\r\nRSET\r\nVRFY x\r\nEXPN y\r\nHELP\r\nNOOP\r\n"
        b"STARTTLS\r\nAUTH PLAIN\r\nDATA\r\nFOO\r\n" + b"NOOP " + b"y" * 600 + b"\r\nQUIT\r\n",
        b"MAIL FROM:<j\xc3\xb6rg@x.de> SMTPUTF8\r\nRCPT TO:<@a,@b:u@c.example>\r\nDATA\r\n"
        + b"z" * 70_000 + b"\r\n.\r\n",
    ]
    return Target("smtp_server", "the sendmail -bs machine: any session bytes and chunking",
                  seeds, [b"MAIL FROM:<", b"RCPT TO:<", b"DATA\r\n", b"QUIT\r\n", b"RSET\r\n",
                          b"EHLO x\r\n", b"\r\n.\r\n", b".\r\n"], run)


PURE_TARGETS: dict[str, Callable[[], Target]] = {
    "config": target_config,
    "authconf": target_authconf,
    "aliases": target_aliases,
    "addresses": target_addresses,
    "address_lists": target_address_lists,
    "lines": target_lines,
    "headers": target_headers,
    "longlines": target_longlines,
    "queuefile": target_queuefile,
    "smtp_reply": target_smtp_reply,
    "smtp_client": target_smtp_client,
    "cmdline": target_cmdline,
    "durations": target_durations,
    "mbox": target_mbox,
    "dates": target_dates,
    "smtp_server": target_smtp_server,
}


# --- running a pure target ---------------------------------------------------------------------


@dataclass
class Result:
    target: str
    about: str
    inputs: int = 0
    accepted: int = 0  # no error at all
    refused: int = 0  # our own error (DmaError that is not a SoftwareError)
    seconds: float = 0.0
    slowest: float = 0.0
    note: str = ""


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise FuzzTimeout in the block after ``seconds`` (SIGALRM; main thread only)."""
    def expire(_signum: int, _frame: Any) -> None:
        raise FuzzTimeout(f"over {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def classify(error: BaseException) -> str | None:
    """The finding kind of an exception, or None for our own error (a refusal)."""
    if isinstance(error, FuzzTimeout):
        return "hang"
    if isinstance(error, Invariant):
        return "invariant"
    if isinstance(error, SoftwareError):
        return "software"
    if isinstance(error, DmaError):
        return None
    return "foreign"


def run_one(target: Target, data: bytes, input_seed: int, timeout: float
            ) -> tuple[BaseException | None, float]:
    rng = random.Random(input_seed)
    started = time.perf_counter()
    try:
        with time_limit(timeout):
            target.run(data, rng)
    except KeyboardInterrupt:
        raise
    except BaseException as error:  # everything is a result here
        return error, time.perf_counter() - started
    return None, time.perf_counter() - started


def fuzz_pure(target: Target, count: int, seed: int, args: argparse.Namespace,
              findings: Findings, progress: Progress) -> Result:
    result = Result(target.name, target.about)
    mutator = Mutator(target.seeds, target.tokens, target.max_size)
    rng = random.Random(f"{seed}:{target.name}")
    started = time.perf_counter()
    inputs = list(target.seeds)  # the seeds themselves first
    while result.inputs < count:
        data = inputs.pop() if inputs else mutator.generate(rng)
        input_seed = rng.getrandbits(48)
        error, spent = run_one(target, data, input_seed, args.timeout)
        result.inputs += 1
        result.slowest = max(result.slowest, spent)
        kind = classify(error) if error is not None else None
        if error is None:
            result.accepted += 1
        elif kind is None:
            result.refused += 1
        else:
            findings.add(Finding(
                target.name, kind, type(error).__name__, str(error)[:2000],
                innermost_frame(error),
                "".join(traceback.format_exception(error)), data, input_seed))
        if spent > args.slow and kind != "hang":
            findings.add(Finding(target.name, "slow", "-", f"one input took {spent:.2f} s",
                                 "-", "", data, input_seed, extra={"seconds": round(spent, 2)}))
        mutator.learn(data, outcome_key(error), rng)
        progress.tick(target.name, result.inputs, count, findings)
    result.seconds = time.perf_counter() - started
    return result


class Progress:
    """A line on stderr every ``every`` seconds, so a nohup log shows how far it got."""

    def __init__(self, every: float) -> None:
        self.every = every
        self.last = time.monotonic()

    def tick(self, name: str, done: int, total: int, findings: Findings, force: bool = False
             ) -> None:
        now = time.monotonic()
        if force or now - self.last >= self.every:
            self.last = now
            groups = len(findings.of(name))
            print(f"[{time.strftime('%H:%M:%S')}] {name}: {done}/{total}, "
                  f"{groups} finding group(s)", file=sys.stderr, flush=True)


# --- the queue runner ------------------------------------------------------------------------


class CaptureLog:
    """A logger for QueueRun that keeps every call (event, fields)."""

    def __init__(self) -> None:
        self.records: list[tuple[str, str, dict[str, Any]]] = []

    def __getattr__(self, level: str) -> Callable[..., None]:
        def record(event: str = "", *args: Any, **fields: Any) -> None:
            self.records.append((level, str(event), fields))
        return record


@dataclass
class SpoolFile:
    name: bytes
    kind: str  # file, dir, fifo, symlink, hardlink
    data: bytes = b""  # content, or the target for links
    mtime: float | None = None


class QueueFuzz:
    """Rounds of random spools beside good items, run like ``dma -q``."""

    def __init__(self, args: argparse.Namespace, findings: Findings, seed: int) -> None:
        self.args = args
        self.findings = findings
        self.rng = random.Random(f"{seed}:queue")
        self.q_mutator = Mutator(Q_SEEDS_FOR_QUEUE, Q_TOKENS, 4096)
        self.m_mutator = Mutator(MESSAGE_SEEDS, [b"To: ", b"From ", b"\n\n"], 128 * 1024)
        self.root = Path(tempfile.mkdtemp(prefix="dma-fuzz-queue-", dir=args.tmp))
        self.caught: list[tuple[str, str]] = []  # (describe text, traceback) from the guard
        self.phases: dict[str, float] = {}  # seconds per phase of the current round
        self._patch_describe()

    def _patch_describe(self) -> None:
        """Keep the traceback of every exception the per-item guard describes (in-process)."""
        import dma.shell.queue_run as queue_run

        original = queue_run.describe

        def describe(error: BaseException) -> str:
            text = original(error)
            self.caught.append((text, "".join(traceback.format_exception(error))))
            return text

        queue_run.describe = describe

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    # -- building a round

    def plan(self, rng: random.Random, items: int, good: int) -> tuple[list[SpoolFile],
                                                                       dict[str, bytes]]:
        from dma.core.queuefile import QueueItem, render_queue_file

        files: list[SpoolFile] = []
        markers: dict[str, bytes] = {}
        base = rng.getrandbits(60)
        good_ids = []
        for index in range(good):
            item_id = f"{base + index:x}.0"
            good_ids.append(item_id)
            marker = f"good-marker-{rng.getrandbits(64):016x}".encode()
            markers[item_id] = marker
            q = render_queue_file(QueueItem(id=item_id, sender=f"app@{MAILNAME}",
                                            recipient=rng.choice([USER, f"{USER}@{MAILNAME}"])))
            files.append(SpoolFile(b"Q" + item_id.encode(), "file", q))
            files.append(SpoolFile(b"M" + item_id.encode(), "file",
                                   b"From: app@fuzz.example\nTo: " + USER.encode() +
                                   b"\nSubject: good\n\n" + marker + b"\n"))
        random_ids: list[str] = []
        for index in range(items):
            item_id = f"{base + good + index:x}.{rng.randrange(4):x}"
            random_ids.append(item_id)
            q = self.q_mutator.generate(rng)
            if rng.random() < 0.6:  # most Q files name themselves (else the ID: is fuzzed too)
                q = re.sub(rb"(?m)^ID: .*$", b"ID: " + item_id.encode(), q, count=1)
            if rng.random() < 0.01 and good_ids:  # the ID: line names a good item
                q = re.sub(rb"(?m)^ID: .*$", b"ID: " + rng.choice(good_ids).encode(), q, count=1)
            name = item_id.encode()
            if rng.random() < 0.01:
                name = rng.choice([b"\xe9.1", b"..", b"x/y", b"", b"a" * 300, b"0.0\n"])
            q_kind = "file" if rng.random() > 0.01 else rng.choice(["dir", "symlink"])
            files.append(SpoolFile(b"Q" + name, q_kind, q if q_kind == "file" else b"/nowhere"))
            roll = rng.random()
            if roll < 0.02:
                files.append(SpoolFile(b"M" + name, "dir"))
            elif roll < 0.03 and random_ids[:-1]:
                files.append(SpoolFile(b"M" + name, "symlink",
                                       b"M" + rng.choice(random_ids[:-1]).encode()))
            elif roll < 0.035:
                files.append(SpoolFile(b"M" + name, "symlink", b"/nonexistent/file"))
            elif roll < 0.04 and self.args.fifos:
                files.append(SpoolFile(b"M" + name, "fifo"))
            elif roll < 0.06 and random_ids[:-1]:
                files.append(SpoolFile(b"M" + name, "hardlink",
                                       b"M" + rng.choice(random_ids[:-1]).encode()))
            elif roll < 0.07:
                pass  # no M file
            else:
                files.append(SpoolFile(b"M" + name, "file", self.m_mutator.generate(rng)))
            if rng.random() < 0.3:
                files[-1].mtime = time.time() - rng.choice((0, 3600, 86400 * 6, 86400 * 400))
        if rng.random() < 0.2:
            files.append(SpoolFile(b"tmp_" + f"{rng.getrandbits(32):x}".encode(), "file",
                                   b"half", time.time() - 7200))
        return files, markers

    def materialise(self, spool: Path, files: list[SpoolFile]) -> None:
        spool.mkdir(mode=0o700)
        directory = os.fsencode(spool)
        made: set[bytes] = set()
        for item in files:
            path = os.path.join(directory, item.name) if item.name else None
            if path is None or b"/" in item.name or item.name in (b"Q..", b"M..", *made):
                continue  # a name no file can have, or one two items drew
            made.add(item.name)
            try:
                if item.kind == "file":
                    with open(path, "wb") as handle:
                        handle.write(item.data)
                elif item.kind == "dir":
                    os.mkdir(path)
                elif item.kind == "fifo":
                    os.mkfifo(path)
                elif item.kind == "symlink":
                    os.symlink(item.data, path)
                elif item.kind == "hardlink":
                    source = os.path.join(directory, item.data)
                    if os.path.isfile(source):
                        os.link(source, path)
                if item.mtime is not None and os.path.lexists(path):
                    os.utime(path, (item.mtime, item.mtime), follow_symlinks=False)
            except FileExistsError:
                pass
            except OSError as error:
                if len(item.name) < 255:
                    raise RuntimeError(f"cannot create {item.name!r}: {error}") from error

    def site(self, number: int) -> tuple[Path, Path, Path]:
        site = self.root / f"round-{number}"
        site.mkdir()
        (site / "mail").mkdir()
        (site / "aliases").write_text(f"postmaster: {USER}\nstaff: {USER}, bob\n")
        conf = site / "dma.conf"
        conf.write_text(f"SPOOLDIR {site / 'spool'}\nMAILDIR {site / 'mail'}\n"
                        f"ALIASES {site / 'aliases'}\nMAILNAME {MAILNAME}\nLOCALONLY\n")
        return site, site / "spool", conf

    # -- one round

    def round(self, number: int, items: int, good: int, use_subprocess: bool,
              result: Result) -> None:
        round_seed = self.rng.getrandbits(48)
        rng = random.Random(round_seed)
        self.phases = {}
        begun = time.perf_counter()
        files, markers = self.plan(rng, items, good)
        site, spool, conf = self.site(number)
        self.materialise(spool, files)
        self.phases["build"] = time.perf_counter() - begun
        self.caught.clear()
        problems: list[tuple[str, str, str, str]] = []  # (kind, type, message, trace)
        with contextlib.suppress(FuzzTimeout):
            try:
                with time_limit(self.args.round_timeout):
                    if use_subprocess:
                        problems += self._run_subprocess(conf)
                    else:
                        problems += self._run_in_process(conf)
            except FuzzTimeout as error:
                problems.append(("hang", "FuzzTimeout", f"queue round {error}", ""))
        problems += self._check_good(site, spool, markers)
        spent = sum(self.phases.values())
        if spent > self.args.slow_round:
            shown = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in self.phases.items())
            problems.append(("slow", "-", f"queue round took {spent:.0f} s: {shown}", ""))
        for kind, error_type, message, trace in problems:
            frames = re.findall(r'File "([^"]+)", line (\d+)', trace)
            ours = [f for f in frames if str(REPO) in f[0] and "/bench/" not in f[0]]
            if ours:
                where = f"{os.path.relpath(ours[-1][0], REPO)}:{ours[-1][1]}"
            elif kind in ("invariant", "slow", "hang"):
                where = re.sub(r"[0-9a-f]{6,}\.[0-9a-f]+|[0-9.]+ s\b|[0-9]+", "#", message)[:120]
            else:
                where = re.sub(r"^.* at ", "", message)[-120:]
            new_group = ("queue", kind, error_type, where) not in self.findings.groups
            saved = self._save_round(number, round_seed, files, conf) if new_group else \
                "(saved with the group's first hit only)"
            item = re.search(r"\bitem ([0-9a-f]{6,}\.[0-9a-f]+)\b", message)
            data = b""
            if item:
                for spool_file in files:
                    if spool_file.name[1:] == item.group(1).encode():
                        data += spool_file.name + b":\n" + spool_file.data + b"\n"
            self.findings.add(Finding(
                "queue", kind, error_type, message[:2000], where, trace, data,
                round_seed, extra={
                    "round files": str(saved),
                    "mode": "dma -q subprocess" if use_subprocess else "in-process",
                }))
        result.inputs += items
        shutil.rmtree(site, ignore_errors=True)

    def _run_in_process(self, conf: Path) -> list[tuple[str, str, str, str]]:
        from dma.adapters import system
        from dma.adapters.spool import Spool
        from dma.shell.queue_ops import list_queue
        from dma.shell.queue_run import QueueRun
        from dma.shell.settings import load_settings

        problems: list[tuple[str, str, str, str]] = []
        log = CaptureLog()
        try:
            settings = load_settings(str(conf), {})
            spool = Spool(settings.config.spooldir)
            spool.prepare()
            spool.clean(system.epoch())
            for json_lines in (False, True):
                with contextlib.redirect_stdout(io.StringIO()), \
                        contextlib.redirect_stderr(io.StringIO()):
                    list_queue(settings, json_lines=json_lines)
            ids = spool.item_ids()
            begun = time.perf_counter()
            QueueRun(settings, log).run(ids)
            self.phases["QueueRun"] = time.perf_counter() - begun
            begun = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()), \
                    contextlib.redirect_stderr(io.StringIO()):
                list_queue(settings, json_lines=True)
            self.phases["mailq"] = time.perf_counter() - begun
        except FuzzTimeout:
            raise
        except BaseException as error:  # escaping the run, even our own error: a finding
            last = next((str(fields["id"]) for _level, _event, fields in reversed(log.records)
                         if "id" in fields), "?")
            problems.append(("escaped", type(error).__name__,
                             f"escaped the queue run (the last id logged: {last}): {error}",
                             "".join(traceback.format_exception(error))))
            problems += self._one_by_one(conf, log)
        for text, trace in self.caught:
            item = next((str(fields.get("id")) for _level, _event, fields in log.records
                         if "id" in fields and any(text in str(v) for v in fields.values())),
                        "?")
            problems.append(("caught", text.split(":", 1)[0],
                             f"caught by the per-item guard (item {item}): {text}", trace))
        return problems

    def _one_by_one(self, conf: Path, log: CaptureLog) -> list[tuple[str, str, str, str]]:
        """After an exception escaped the run: run each item left on its own, so the rest
        are still exercised and each escape names its item."""
        from dma.adapters.spool import Spool
        from dma.shell.queue_run import QueueRun
        from dma.shell.settings import load_settings

        problems: list[tuple[str, str, str, str]] = []
        settings = load_settings(str(conf), {})
        for item_id in Spool(settings.config.spooldir).item_ids():
            try:
                QueueRun(settings, log).run([item_id])
            except FuzzTimeout:
                raise
            except BaseException as error:  # each escape is a finding, with its item
                problems.append(("escaped", type(error).__name__,
                                 f"escaped the queue run (item {item_id} alone): {error}",
                                 "".join(traceback.format_exception(error))))
        return problems

    def _run_subprocess(self, conf: Path) -> list[tuple[str, str, str, str]]:
        dma = REPO / ".venv" / "bin" / "dma"
        argv = [str(dma)] if dma.exists() else [sys.executable, "-m", "dma.shell.main"]
        env = {k: v for k, v in os.environ.items() if k not in ("DMA_CONF", "EMAIL")}
        problems: list[tuple[str, str, str, str]] = []
        for args in (["-q", "-v"], ["-bp"], ["-bj"]):
            begun = time.perf_counter()
            done = subprocess.run([*argv, "-C", str(conf), *args], capture_output=True,
                                  timeout=self.args.round_timeout, env=env, check=False)
            self.phases[f"dma {' '.join(args)}"] = time.perf_counter() - begun
            stderr = done.stderr.decode("utf-8", "backslashreplace")
            if done.returncode != 0:
                problems.append(("exit", f"exit {done.returncode}",
                                 f"dma {' '.join(args)} exited {done.returncode}", stderr[-4000:]))
            for line in stderr.splitlines():
                if "Traceback" in line or "internal error" in line:
                    problems.append(("caught", "stderr", f"dma {' '.join(args)}: {line[:1500]}",
                                     stderr[-4000:]))
        return problems

    def _check_good(self, site: Path, spool: Path, markers: dict[str, bytes]
                    ) -> list[tuple[str, str, str, str]]:
        mailbox = site / "mail" / USER
        text = mailbox.read_bytes() if mailbox.is_file() else b""
        problems = []
        for item_id, marker in markers.items():
            copies = text.count(marker)
            left = (spool / f"Q{item_id}").exists()
            if copies != 1 or left:
                problems.append(("invariant", "good item",
                                 f"good item {item_id}: delivered {copies} time(s), "
                                 f"Q file {'still queued' if left else 'gone'}", ""))
        return problems

    def _save_round(self, number: int, round_seed: int, files: list[SpoolFile], conf: Path
                    ) -> Path:
        target = self.findings.out / f"queue-round-{number}"
        if target.exists():
            return target
        (target / "spool").mkdir(parents=True)
        shutil.copy(conf, target / "dma.conf")
        index = []
        for position, item in enumerate(files):
            stem = f"{position:05d}"
            (target / "spool" / stem).write_bytes(item.data)
            index.append({"file": stem, "name": item.name.decode("latin-1"), "kind": item.kind,
                          "mtime": item.mtime})
        (target / "files.json").write_text(json.dumps({"round_seed": round_seed,
                                                       "files": index}, indent=1))
        return target


Q_SEEDS_FOR_QUEUE = [
    *Q_SEEDS,
    b"ID: x.0\nSender: app@fuzz.example\nRecipient: " + USER.encode() + b"\n",
    b"ID: x.0\nSender: app@fuzz.example\nRecipient: " + USER.encode() + b"@fuzz.example\n",
    b"ID: x.0\nSender: \nRecipient: staff\n",
    b"ID: x.0\nSender: root\nRecipient: remote@example.org\nX-Attempts: 9\n",
    b"ID: x.0\nSender: nobody-xyz\nRecipient: nosuchuser\n",
    b"ID: x.0\nSender: app@fuzz.example\nRecipient: " + USER.encode() + b",remote@example.org\n",
    b"ID: x.0\nSender: caf\xe9@fuzz.example\nRecipient: r\xe9sum\xe9\n",
    b"ID: x.0\nSender: a@b\nRecipient: \"quoted,local\"@fuzz.example\nX-DSN-Notify: FAILURE\n",
]


def fuzz_queue(count: int, seed: int, args: argparse.Namespace, findings: Findings,
               progress: Progress) -> Result:
    result = Result("queue", "random Q/M files beside good ones: dma -q (in-process and "
                    "subprocess), mailq, -bj; good items delivered once")
    fuzz = QueueFuzz(args, findings, seed)
    started = time.perf_counter()
    rounds = subprocess_rounds = 0
    try:
        while result.inputs < count:
            items = min(args.round_items, count - result.inputs)
            use_subprocess = args.subprocess_every > 0 and rounds % args.subprocess_every == 0
            round_started = time.perf_counter()
            fuzz.round(rounds, items, args.good_items, use_subprocess, result)
            result.slowest = max(result.slowest, time.perf_counter() - round_started)
            rounds += 1
            subprocess_rounds += use_subprocess
            progress.tick("queue", result.inputs, count, findings)
    finally:
        fuzz.close()
    result.seconds = time.perf_counter() - started
    result.note = (f"{rounds} rounds of <= {args.round_items} random items + "
                   f"{args.good_items} good; {subprocess_rounds} as dma -q subprocesses; "
                   "slowest = one round")
    return result


# --- main ------------------------------------------------------------------------------------


def table(results: list[Result], findings: Findings) -> list[str]:
    rows = ["| target | inputs | accepted | refused (DmaError) | wall s | inputs/s | slowest s "
            "| finding groups (kinds) |", "|---|---:|---:|---:|---:|---:|---:|---|"]
    for result in results:
        groups = findings.of(result.target)
        kinds = ", ".join(sorted({f"{g.kind}" for g in groups})) or "-"
        rate = result.inputs / result.seconds if result.seconds else 0.0
        rows.append(f"| {result.target} | {result.inputs} | {result.accepted} | {result.refused} "
                    f"| {result.seconds:.1f} | {rate:.0f} | {result.slowest:.3f} "
                    f"| {len(groups)} ({kinds}) |")
    return rows


def report(results: list[Result], findings: Findings, out: Path, args: argparse.Namespace
           ) -> int:
    print("\n".join(table(results, findings)))
    for result in results:
        if result.note:
            print(f"{result.target}: {result.note}")
    print()
    for key, finding in findings.groups.items():
        print(f"- {finding.target} [{finding.kind}] {finding.error_type}: "
              f"{finding.message[:300]} at {finding.where} ({finding.hits} hit(s)); "
              f"{findings.files[key]}.txt")
    findings.rewrite()
    print(f"\nfindings and summary in {out}")
    write_summary(results, findings, out, args)
    return 1 if findings.groups else 0


def write_summary(results: list[Result], findings: Findings, out: Path,
                  args: argparse.Namespace) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps({
        "args": {k: v for k, v in vars(args).items() if isinstance(v, str | int | float | bool)},
        "results": [dataclasses.asdict(r) for r in results],
        "findings": [{"file": findings.files[k], "target": f.target, "kind": f.kind,
                      "type": f.error_type, "message": f.message[:500], "where": f.where,
                      "hits": f.hits} for k, f in findings.groups.items()],
    }, indent=1))
    notes = [f"{r.target}: {r.note}" for r in results if r.note]
    (out / "summary.md").write_text("\n".join([*table(results, findings), "", *notes]) + "\n")


def replay(args: argparse.Namespace) -> int:
    name, path = args.replay
    if name not in PURE_TARGETS:
        print(f"replay works for the pure targets ({', '.join(PURE_TARGETS)}); a queue round "
              "is saved as files: look at its files.json", file=sys.stderr)
        return 2
    target = PURE_TARGETS[name]()
    rng = random.Random(args.input_seed)
    target.run(Path(path).read_bytes(), rng)  # let it raise, with its whole traceback
    print("no exception")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK_COUNT} inputs per target: check that it works")
    parser.add_argument("--count", type=int, help=f"inputs per target (default {FULL_COUNT})")
    parser.add_argument("--targets", help="comma list of targets (default: all); see --list")
    parser.add_argument("--list", action="store_true", help="list the targets and exit")
    parser.add_argument("--seed", type=int, default=7, help="master seed (default 7)")
    parser.add_argument("--out", type=Path, help="findings directory (default /tmp/dma-fuzz-TIME)")
    parser.add_argument("--tmp", default="/dev/shm" if os.path.isdir("/dev/shm") else None,
                        help="where queue rounds build their spools (default /dev/shm)")
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds per input (hang)")
    parser.add_argument("--slow", type=float, default=5.0, help="seconds per input (slow)")
    parser.add_argument("--round-items", type=int, default=200, help="random items per round")
    parser.add_argument("--good-items", type=int, default=3, help="good items per round")
    parser.add_argument("--round-timeout", type=float, default=300.0, help="seconds per round")
    parser.add_argument("--slow-round", type=float, default=30.0,
                        help="a queue round over this many seconds is a finding (with phases)")
    parser.add_argument("--subprocess-every", type=int, default=10,
                        help="every Nth queue round is a real dma -q subprocess (0: never)")
    parser.add_argument("--fifos", action="store_true",
                        help="also put FIFOs in the spool as M files (a hang costs a round)")
    parser.add_argument("--nice", type=int, default=10, help="lower our priority by this much")
    parser.add_argument("--replay", nargs=2, metavar=("TARGET", "FILE"),
                        help="run one saved input through a target and show what it raises")
    parser.add_argument("--input-seed", type=int, default=0, help="with --replay")
    args = parser.parse_args(argv)
    names = [*PURE_TARGETS, "queue"]
    if args.list:
        for name in PURE_TARGETS:
            print(f"{name:14} {PURE_TARGETS[name]().about}")
        print(f"{'queue':14} random Q/M files beside good ones, dma -q, mailq")
        return 0
    if args.replay:
        return replay(args)
    if args.nice:
        os.nice(args.nice)
    count = args.count or (QUICK_COUNT if args.quick else FULL_COUNT)
    if args.quick and args.subprocess_every == 10:
        args.subprocess_every = 2
    if args.quick and args.round_items == 200:
        args.round_items = 60
    chosen = args.targets.split(",") if args.targets else names
    unknown = [name for name in chosen if name not in names]
    if unknown:
        parser.error(f"unknown target(s) {', '.join(unknown)}; known: {', '.join(names)}")
    out = args.out or Path(tempfile.gettempdir()) / f"dma-fuzz-{time.strftime('%Y%m%d-%H%M%S')}"
    findings = Findings(out)
    progress = Progress(30.0)
    results: list[Result] = []
    print(f"fuzzing {', '.join(chosen)}: {count} inputs each, seed {args.seed}, out {out}",
          file=sys.stderr, flush=True)
    started = time.perf_counter()
    for name in chosen:
        try:
            if name == "queue":
                results.append(fuzz_queue(count, args.seed, args, findings, progress))
            else:
                results.append(fuzz_pure(PURE_TARGETS[name](), count, args.seed, args,
                                         findings, progress))
        except Exception as error:  # the harness failed on this target: a row says so
            traceback.print_exc()
            results.append(Result(name, "harness error", note=f"harness error: {error!r}"))
        progress.tick(name, results[-1].inputs, count, findings, force=True)
        write_summary(results, findings, out, args)  # so far, in case a later target dies
    print(f"total wall time {time.perf_counter() - started:.0f} s", flush=True)
    return report(results, findings, out, args)


if __name__ == "__main__":
    sys.exit(main())
