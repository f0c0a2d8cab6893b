"""Value classes (core/values.py): what @dataclass(frozen=True, slots=True) gives, cheaply."""

from __future__ import annotations

import copy
import dataclasses
import pickle
import subprocess
import sys

import pytest

from dma.core.values import field, field_names, frozen, mutable, replace


@frozen
class Point:
    """A value with a required field, a default and a derived field set after init."""

    x: int
    label: str = "p"
    tags: tuple[str, ...] = ()
    index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "index", {self.label: self.x})

    @property
    def double(self) -> int:
        """A method of the class survives its remaking."""
        return self.x * 2


@mutable
class Draft:
    """A mutable draft with a factory default."""

    name: str
    words: list[str] = field(default_factory=list)
    secret: str = field(default="", repr=False)


def test_constructs_by_position_and_by_name_with_defaults() -> None:
    """Fields are taken in order, by position or by name, and defaults fill the rest."""
    assert Point(1).label == "p"
    assert Point(1, "a", ("t",)) == Point(x=1, tags=("t",), label="a")
    assert Point(label="b", x=2).x == 2
    assert Point(1).double == 2


def test_post_init_sets_a_field_init_does_not_take() -> None:
    """__post_init__ runs after the fields are set and may fill an init=False field."""
    assert Point(3, "k").index == {"k": 3}


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Point(), "Point.__init__() missing required argument: 'x'"),
        (lambda: Point(1, "a", (), 4),
         "Point.__init__() takes 3 positional arguments but 4 were given"),
        (lambda: Point(1, x=2), "Point.__init__() got multiple values for argument 'x'"),
        (lambda: Point(1, nope=2), "Point.__init__() got an unexpected keyword argument 'nope'"),
        (lambda: Point(1, index={}), "Point.__init__() got an unexpected keyword argument 'index'"),
    ],
)
def test_wrong_arguments_raise_type_error(make: object, message: str) -> None:
    """Missing, surplus, doubled and unknown arguments are a TypeError naming the field."""
    with pytest.raises(TypeError) as caught:
        make()  # type: ignore[operator]
    assert str(caught.value) == message


def test_equality_and_hash_follow_the_compared_fields() -> None:
    """Equal fields make equal values with equal hashes; compare=False fields do not count,
    another class never equals."""
    assert Point(1, "a") == Point(1, "a")
    assert hash(Point(1, "a")) == hash(Point(1, "a"))
    assert Point(1, "a") != Point(1, "b")
    assert Point(1) != (1, "p", ())
    assert len({Point(1), Point(1), Point(2)}) == 2


def test_one_field_compares_as_a_tuple_does() -> None:
    """A value of one NaN field equals itself, as a dataclass's tuple comparison makes it."""

    @frozen
    class Reading:
        level: float

    nan = float("nan")
    assert Reading(nan) == Reading(nan)


def test_repr_names_the_fields_that_show() -> None:
    """repr is Name(field=value, ...) without repr=False fields, as dataclasses write it."""
    assert repr(Point(1, "a")) == "Point(x=1, label='a', tags=())"
    assert repr(Draft("d", ["w"], secret="hidden")) == "Draft(name='d', words=['w'])"


def test_values_are_frozen_and_slotted() -> None:
    """Assigning or deleting a field raises FrozenInstanceError; there is no __dict__."""
    point = Point(1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        point.x = 2  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        del point.label  # type: ignore[misc]
    with pytest.raises(AttributeError):
        point.other = 1  # type: ignore[attr-defined]
    assert not hasattr(point, "__dict__")
    assert Point.__slots__ == ("x", "label", "tags", "index")


def test_mutable_classes_are_assignable_unhashable_with_fresh_factories() -> None:
    """A @mutable instance can be assigned, is not hashable, and each gets its own
    factory value."""
    first, second = Draft("a"), Draft("b")
    first.words.append("w")
    first.name = "c"
    assert second.words == []
    assert first == Draft("c", ["w"])
    with pytest.raises(TypeError):
        hash(first)


def test_replace_copies_with_changes() -> None:
    """replace gives a new value with the changes, the original unchanged, derived fields
    made again; an init=False field cannot be replaced."""
    point = Point(1, "a")
    moved = replace(point, label="b")
    assert (moved, point.label, moved.index) == (Point(1, "b"), "a", {"b": 1})
    with pytest.raises(ValueError, match="index"):
        replace(point, index={})
    with pytest.raises(TypeError, match="nope"):
        replace(point, nope=1)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="not a value"):
        replace(object())


def test_field_names_in_order() -> None:
    """field_names lists every field of a value class or value, in order."""
    assert field_names(Point) == ("x", "label", "tags", "index")
    assert field_names(Draft("a")) == ("name", "words", "secret")


def test_copy_and_pickle_round_trip() -> None:
    """copy, deepcopy and pickle give an equal value (derived fields made again)."""
    point = Point(1, "a", ("t",))
    for again in (copy.copy(point), copy.deepcopy(point), pickle.loads(pickle.dumps(point))):
        assert again == point
        assert again.index == {"a": 1}


def test_match_takes_positional_patterns() -> None:
    """__match_args__ lists the fields __init__ takes, so class patterns bind by position."""
    match Point(1, "a"):
        case Point(x, label):
            assert (x, label) == (1, "a")
        case _:
            pytest.fail("no match")


def test_dataclasses_functions_accept_values() -> None:
    """dataclasses' is_dataclass, fields, replace and asdict work on value classes."""
    point = Point(1, "a")
    assert dataclasses.is_dataclass(point)
    assert [f.name for f in dataclasses.fields(Point)] == ["x", "label", "tags", "index"]
    assert not dataclasses.fields(Point)[3].init
    assert dataclasses.replace(point, x=5) == Point(5, "a")
    assert dataclasses.asdict(point) == {"x": 1, "label": "a", "tags": (), "index": {"a": 1}}
    assert dataclasses.replace(Draft("a", ["w"]), name="b") == Draft("b", ["w"])


def test_a_class_keeps_the_methods_it_defines() -> None:
    """As with dataclasses, a class's own __repr__, __eq__, __hash__ and __init__ stay; a
    frozen class with its own __eq__ still hashes its fields."""

    @frozen
    class Secret:
        login: str
        secret: str = field(repr=False)

        def __repr__(self) -> str:
            return f"Secret({self.login}, hidden)"

        def __eq__(self, other: object) -> bool:
            return isinstance(other, Secret) and other.login == self.login

    @frozen
    class Fixed:
        number: int

        def __init__(self, text: str) -> None:
            object.__setattr__(self, "number", int(text))

        def __hash__(self) -> int:
            return 7

    assert repr(Secret("a", "s")) == "Secret(a, hidden)"
    assert Secret("a", "s") == Secret("a", "t")
    assert hash(Secret("a", "s")) == hash(("a", "s"))
    assert Fixed("12").number == 12
    assert hash(Fixed("3")) == 7


def test_a_frozen_class_cannot_define_setattr() -> None:
    """A frozen class with its own __setattr__ or __delattr__ is refused, as dataclasses do."""
    with pytest.raises(TypeError, match="__setattr__"):

        @frozen
        class Loose:
            x: int

            def __setattr__(self, name: str, value: object) -> None:
                object.__setattr__(self, name, value)


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        ("class C:\n    x: ClassVar[int] = 1\n", "ClassVar"),
        ("class C:\n    __slots__ = ('x',)\n    x: int\n", "__slots__"),
        ("class C:\n    x: list[int] = []\n", "mutable default"),
        ("class C(Point):\n    y: int = 0\n", "inherit"),
        ("class C:\n    x: int = field(default=1, default_factory=int)\n", "not both"),
    ],
)
def test_unsupported_definitions_raise_type_error(body: str, complaint: str) -> None:
    """What the helper does not do is refused when the class is defined, never half done."""
    namespace = {"__name__": __name__, "field": field, "Point": Point}
    with pytest.raises(TypeError, match=complaint):
        exec("from __future__ import annotations\n" + body, namespace)
        frozen(namespace["C"])  # type: ignore[arg-type]


def test_defining_values_imports_no_heavy_module() -> None:
    """Importing the helper and defining, making, comparing and replacing values loads
    none of dataclasses, inspect, typing or re (each costs start-up) that was not loaded."""
    program = (
        "from __future__ import annotations\n"
        "import sys\n"
        "before = set(sys.modules)\n"
        "from dma.core.values import field, frozen, mutable, replace\n"
        "@frozen\n"
        "class V:\n"
        "    a: int\n"
        "    b: tuple[str, ...] = ()\n"
        "@mutable\n"
        "class R:\n"
        "    w: list[int] = field(default_factory=list)\n"
        "v = replace(V(1), b=('x',))\n"
        "assert v == V(1, ('x',)) and hash(v) and repr(v) and R().w == []\n"
        "new = set(sys.modules) - before\n"
        "print(' '.join(m for m in ('dataclasses', 'inspect', 'typing', 're') if m in new))\n"
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == ""
