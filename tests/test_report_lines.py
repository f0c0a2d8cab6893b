"""Report lines on examples: what the remote-delivery child's lines look like, and the
lines its parent refuses."""

from __future__ import annotations

import pytest

from dma.core.errors import DataError
from dma.core.ledger import AddressId
from dma.core.outcomes import deferred, delivered, failed
from dma.core.report_lines import MAX_REPORT_OCTETS, decode_report, encode_report


def test_a_delivered_address_is_one_short_json_line() -> None:
    """A delivered address is its id, part and outcome as one compact ASCII JSON line."""
    line = encode_report(AddressId("1a.0", 2), delivered("250 ok"))
    assert line == b'["1a.0",2,["delivered","250 ok","",null,null,[]]]\n'


def test_a_comma_list_failure_keeps_every_part_and_latin1_octets() -> None:
    """Parts, a Remote-MTA, a diagnostic and octets read with surrogateescape survive."""
    latin = b"caf\xe9".decode("utf-8", "surrogateescape")
    outcome = failed("a: 550; b: 451", "5.1.1", "smtp; 550 no", "mx.example",
                     parts=((f"{latin}@x.example", failed("550 no", "5.1.1")),
                            ("b@x.example", deferred("451 later"))))
    assert decode_report(encode_report(AddressId("1a.0"), outcome)) == (AddressId("1a.0"),
                                                                        outcome)


@pytest.mark.parametrize("line", [
    b"", b"\n", b"null\n", b"[]\n", b'["a",0]\n', b'["",0,["delivered","","",null,null,[]]]',
    b'["a",-1,["delivered","","",null,null,[]]]', b'["a",true,["delivered","","",null,null,[]]]',
    b'["a",0,["sent","","",null,null,[]]]', b'["a",0,["delivered",1,"",null,null,[]]]',
    b'["a",0,["delivered","","",null,null,{}]]', b'["a",NaN,["delivered","","",null,null,[]]]',
    b'["a",0,["delivered","\\ud800","",null,null,[]]]', b'["\xe9",0,[]]', b"[" * 100_000,
    b'["a",' + b"9" * 5000 + b',["delivered","","",null,null,[]]]',
    b'["a",0,["delivered","' + b"x" * MAX_REPORT_OCTETS + b'","",null,null,[]]]',
])
def test_lines_that_are_no_report_are_our_data_error(line: bytes) -> None:
    """Wrong shapes, kinds, types, lone surrogates, non-ASCII, deep nesting, huge numbers
    and over-long lines are DataError, saying the report is bad."""
    with pytest.raises(DataError, match="bad report from the remote delivery process"):
        decode_report(line)
