"""The TLS policy of SPEC 5.5 for every combination of its dma.conf keys, read from
real dma.conf text (so combinations the parser refuses are refused here too)."""

from __future__ import annotations

import itertools

import pytest

from dma.core.config import parse_config
from dma.core.errors import ConfigError
from dma.core.ledger import AddressId
from dma.core.transport import QueuedRecipient, Security, plan_transactions, security_for

PIN = "ab" * 32
KEYS = ("SECURETRANSFER", "STARTTLS", "OPPORTUNISTIC_TLS", "VERIFYCERT", "NOVERIFYCERT")

# (SECURETRANSFER, STARTTLS, OPPORTUNISTIC_TLS, VERIFYCERT, NOVERIFYCERT) ->
# (smarthost: implicit, starttls, verify), (MX: implicit, starttls, verify)
# Read straight from SPEC 5.5: SECURETRANSFER alone is implicit TLS to a smarthost;
# with STARTTLS it upgrades after EHLO; MX delivery always starts plain and upgrades;
# OPPORTUNISTIC_TLS carries on in plain text (unverified TLS is fine there, unless
# VERIFYCERT); mandatory TLS is verified unless NOVERIFYCERT.
EXPECTED = {
    (1, 0, 0, 0, 0): ((True, "no", True), (False, "required", True)),
    (1, 0, 0, 0, 1): ((True, "no", False), (False, "required", False)),
    (1, 0, 0, 1, 0): ((True, "no", True), (False, "required", True)),
    (1, 0, 0, 1, 1): ((True, "no", False), (False, "required", False)),
    (1, 0, 1, 0, 0): ((True, "no", True), (False, "opportunistic", False)),
    (1, 0, 1, 0, 1): ((True, "no", False), (False, "opportunistic", False)),
    (1, 0, 1, 1, 0): ((True, "no", True), (False, "opportunistic", True)),
    (1, 0, 1, 1, 1): ((True, "no", False), (False, "opportunistic", False)),
    (1, 1, 0, 0, 0): ((False, "required", True), (False, "required", True)),
    (1, 1, 0, 0, 1): ((False, "required", False), (False, "required", False)),
    (1, 1, 0, 1, 0): ((False, "required", True), (False, "required", True)),
    (1, 1, 0, 1, 1): ((False, "required", False), (False, "required", False)),
    (1, 1, 1, 0, 0): ((False, "opportunistic", False), (False, "opportunistic", False)),
    (1, 1, 1, 0, 1): ((False, "opportunistic", False), (False, "opportunistic", False)),
    (1, 1, 1, 1, 0): ((False, "opportunistic", True), (False, "opportunistic", True)),
    (1, 1, 1, 1, 1): ((False, "opportunistic", False), (False, "opportunistic", False)),
    (0, 0, 0, 0, 0): ((False, "no", False), (False, "no", False)),
    (0, 0, 0, 0, 1): ((False, "no", False), (False, "no", False)),
}


def _config_text(flags: tuple[int, ...], fingerprint: bool) -> str:
    lines = [key for key, on in zip(KEYS, flags, strict=True) if on]
    if fingerprint:
        lines.append(f"FINGERPRINT {PIN}")
    return "".join(line + "\n" for line in lines)


@pytest.mark.parametrize("flags", sorted(itertools.product((0, 1), repeat=5)))
@pytest.mark.parametrize("fingerprint", [False, True])
def test_tls_policy_for_every_combination_of_keys(
    flags: tuple[int, ...], fingerprint: bool
) -> None:
    """Each combination gives SPEC 5.5's policy for a smarthost and for an MX host, the
    fingerprint pinned whenever TLS may run; a TLS key without SECURETRANSFER is a
    config error, never a plain-text policy (SPEC 2.1)."""
    text = _config_text(flags, fingerprint)
    tls_keys_without_securetransfer = not flags[0] and (any(flags[1:4]) or fingerprint)
    if tls_keys_without_securetransfer:
        with pytest.raises(ConfigError):
            parse_config(text, "dma.conf")
        return
    config = parse_config(text, "dma.conf")
    pin = bytes.fromhex(PIN) if fingerprint else None
    for kind, (implicit, starttls, verify) in zip(
            ("smarthost", "mx"), EXPECTED[flags], strict=True):
        assert security_for(config, kind) == Security(implicit, starttls, verify, pin), kind


def test_transactions_send_each_recipient_once() -> None:
    """100 000 items of one message (a -t with that many recipients) plan into one
    transaction with each recipient once, in first-seen order (it took 113 s when each
    recipient was looked up in a list)."""
    items = [QueuedRecipient(AddressId(f"66aa.{n:x}"), "s@x.example", f"r{n % 50000}@y.example")
             for n in range(100_000)]
    (plan,) = plan_transactions(items)
    assert len(plan.item_ids) == 100_000
    assert plan.recipients == tuple(f"r{n}@y.example" for n in range(50_000))
