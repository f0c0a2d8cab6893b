"""Properties of the report lines between the remote-delivery child and its root parent:
every report survives the trip unchanged, and any octets decode to a report or DataError."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from dma.core.errors import DataError
from dma.core.ledger import AddressId
from dma.core.outcomes import Outcome
from dma.core.report_lines import decode_report, encode_report

# Texts as delivery makes them: Unicode, or octets read with surrogateescape.
TEXTS = st.text() | st.binary().map(lambda raw: raw.decode("utf-8", "surrogateescape"))
OPTIONAL = st.none() | TEXTS
KINDS = st.sampled_from(["delivered", "deferred", "failed"])


def outcomes(parts: st.SearchStrategy[tuple[tuple[str, Outcome], ...]]
             ) -> st.SearchStrategy[Outcome]:
    return st.builds(Outcome, KINDS, TEXTS, TEXTS, OPTIONAL, OPTIONAL, parts)


FLAT = outcomes(st.just(()))
NESTED = outcomes(st.lists(st.tuples(TEXTS, FLAT), max_size=4).map(tuple))
IDS = st.builds(AddressId, st.text(min_size=1), st.integers(0, 2**70))


@settings(max_examples=400, deadline=None)
@given(IDS, NESTED | outcomes(st.lists(st.tuples(TEXTS, NESTED), max_size=3).map(tuple)))
def test_a_report_comes_back_as_it_was_sent(address: AddressId, outcome: Outcome) -> None:
    """decode(encode(id, outcome)) is the same id and outcome, on one ASCII line."""
    line = encode_report(address, outcome)
    assert line.endswith(b"\n") and line.count(b"\n") == 1 and line.isascii()
    assert decode_report(line) == (address, outcome)


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=400)
       | st.builds(lambda head, tail: head + tail,
                   st.sampled_from([b'["a",0,["failed","x","5.0.0",null,null,[',
                                    b'["a",0,', b"[", b'["a",1e400,', b'[[[[[[[[[[']),
                   st.binary(max_size=100)))
def test_any_octets_decode_to_a_report_or_our_data_error(line: bytes) -> None:
    """Whatever the child writes, the parent gets a report or DataError, nothing else."""
    try:
        address, outcome = decode_report(line)
    except DataError:
        return
    assert isinstance(address, AddressId) and isinstance(outcome, Outcome)
