"""DSN parameters (RFC 3461): one set of checks for submission and for the SMTP client.

Whatever ``-N``, ``-R`` and ``-V`` accept at submission must be sendable later, and a
Q file (ours or the C dma's, possibly edited) must not be able to hold a value the
client would refuse mid-connection: both sides ask these functions.
"""

from __future__ import annotations

from dma.core.octets import wire_octets

ENVID_MAX = 100
"""RFC 3461 section 4.4: the ENVID parameter, as sent (xtext), is at most 100 characters."""

NOTIFY_WORDS = ("SUCCESS", "FAILURE", "DELAY")
# Plain string checks, no regular expressions: this module is on the submission path,
# where compiling patterns at import costs start-up time.


def xtext(value: str) -> str:
    """RFC 3461 xtext: printable ASCII except ``+`` and ``=`` as is, every other octet ``+XX``."""
    return "".join(
        chr(octet) if 0x21 <= octet <= 0x7E and octet not in (0x2B, 0x3D) else f"+{octet:02X}"
        for octet in wire_octets(value)
    )


def envid_problem(value: str) -> str | None:
    """Why ``value`` cannot be an ENVID, or None: printable ASCII without blanks, and
    at most ``ENVID_MAX`` characters once xtext-encoded (``+`` and ``=`` count three)."""
    if not value or not value.isascii() or not value.isprintable() or " " in value:
        return "the envelope id must be printable ASCII without spaces"
    if len(xtext(value)) > ENVID_MAX:
        return (f"the envelope id is {len(xtext(value))} characters once encoded for SMTP "
                f"(each + or = takes three), more than {ENVID_MAX}")
    return None


def notify_problem(value: str) -> str | None:
    """Why ``value`` cannot be a NOTIFY parameter, or None."""
    words = value.upper().split(",")
    if words != ["NEVER"] and not all(word in NOTIFY_WORDS for word in words):
        return "NOTIFY must be NEVER or a list of SUCCESS, FAILURE and DELAY"
    return None


def ret_problem(value: str) -> str | None:
    """Why ``value`` cannot be a RET parameter, or None."""
    if value.upper() not in ("FULL", "HDRS"):
        return "RET must be FULL or HDRS"
    return None
