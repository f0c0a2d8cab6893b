"""Value classes behave as the frozen dataclass of the same fields, for any field values."""

from __future__ import annotations

import dataclasses

from hypothesis import given
from hypothesis import strategies as st

from dma.core.values import frozen, replace

_ANY = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8),
    st.binary(max_size=8), st.tuples(st.integers(), st.text(max_size=3)),
)


@frozen
class Trio:
    """Three fields, two with defaults."""

    a: object
    b: object = None
    c: object = 0


@dataclasses.dataclass(frozen=True, slots=True)
class Twin:
    """The dataclass a value class stands for."""

    a: object
    b: object = None
    c: object = 0


def _pairs() -> st.SearchStrategy[tuple[Trio, Twin]]:
    return st.tuples(_ANY, _ANY, _ANY).map(lambda f: (Trio(*f), Twin(*f)))


@given(_pairs(), _pairs())
def test_equality_hash_and_repr_agree_with_the_dataclass(left: tuple[Trio, Twin],
                                                         right: tuple[Trio, Twin]) -> None:
    """Two values are equal exactly when their dataclass twins are; equal values hash
    alike as the twins do; repr is the twin's with the class name changed."""
    assert (left[0] == right[0]) == (left[1] == right[1])
    assert (left[0] != right[0]) == (left[1] != right[1])
    if left[1] == right[1]:
        assert hash(left[0]) == hash(right[0])
    assert repr(left[0]) == "Trio" + repr(left[1])[len("Twin"):]


@given(_pairs(), st.dictionaries(st.sampled_from("abc"), _ANY))
def test_replace_agrees_with_the_dataclass(pair: tuple[Trio, Twin], changes: dict[str, object]
                                           ) -> None:
    """replace gives the value whose fields are the twin's after dataclasses.replace."""
    changed = replace(pair[0], **changes)
    twin = dataclasses.replace(pair[1], **changes)
    assert all(getattr(changed, name) is getattr(twin, name) for name in "abc")


@given(st.tuples(_ANY, _ANY, _ANY), st.integers(0, 3), st.sets(st.sampled_from("abc")))
def test_any_mix_of_positions_and_names_builds_the_same_value(
        fields: tuple[object, object, object], positional: int, named: set[str]) -> None:
    """Whichever fields come by position and which by name, the value is the dataclass's
    (or both raise TypeError)."""
    args = fields[:positional]
    kwargs = {name: fields["abc".index(name)] for name in named}
    try:
        twin = Twin(*args, **kwargs)  # type: ignore[misc]
    except TypeError:
        twin = None
    if twin is None:
        try:
            Trio(*args, **kwargs)  # type: ignore[misc]
        except TypeError:
            return
        raise AssertionError("the value class took what the dataclass refused")
    made = Trio(*args, **kwargs)  # type: ignore[misc]
    assert repr(made) == "Trio" + repr(twin)[len("Twin"):]
