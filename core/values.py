"""Value classes: frozen, slotted, compared field by field, and cheap to define.

``@frozen`` makes of a class with annotated fields what
``@dataclass(frozen=True, slots=True)`` makes, without generating code: the class
gets shared methods that read a table of its fields.  Defining one costs tens of
microseconds, where a dataclass costs 0.5-1.5 ms and importing ``dataclasses``
~7 ms (it imports inspect, ast, dis and tokenize); a submission defines some
twenty value classes before it reads a byte of the message (issue 11).

A value class has:

- ``__slots__`` of its fields and no ``__dict__``;
- ``__init__`` taking the fields in order, by position or by name, with their
  defaults (``name: T = default``, or ``field(default_factory=...)`` for a fresh
  mutable one), then ``__post_init__`` when the class defines one (it sets a field
  with ``object.__setattr__``, as with dataclasses);
- ``__eq__`` (same class, equal fields) and ``__hash__`` over the fields that
  compare, ``__repr__`` (``Name(a=1, b='x')``) over those that show,
  ``__match_args__``; as with dataclasses, a method the class defines itself stays
  (its own ``__init__``, ``__repr__``, ``__eq__``, ``__hash__``);
- assignment and deletion refused with ``dataclasses.FrozenInstanceError``;
- copy and pickle through ``__reduce__`` (the fields given to ``__init__`` again).

``@mutable`` is the same for state kept inside one function (a parser's draft):
assignable, and unhashable as a mutable dataclass is.  ``replace`` and
``field_names`` do what ``dataclasses.replace`` and ``dataclasses.fields`` do; mypy
sees every value class as the dataclass it stands for (``dataclass_transform``), and
checks each change given to ``replace`` against its field's type.

The functions of ``dataclasses`` itself (``fields``, ``replace``, ``asdict``,
``is_dataclass``) accept value classes too: the first such call for a class imports
dataclasses and builds the field table they read, from the same fields.  Tests, and
code written for dataclasses, keep working; a hot path uses ``replace`` from here.

Not supported (a definition that asks for them raises TypeError): fields inherited
from another value class, ``ClassVar`` and ``InitVar`` fields, a ``__slots__`` of
the class's own, a mutable default outside ``default_factory``.
"""

from __future__ import annotations

from itertools import repeat
from operator import attrgetter

TYPE_CHECKING = False  # not typing's: a submission need not import typing
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from dataclasses import replace as replace  # mypy checks each change by its field's type
    from typing import Any, TypeVar, dataclass_transform

    T = TypeVar("T")
else:

    def dataclass_transform(**_options):
        """Nothing at run time: the decorator only tells type checkers what a class is."""
        return lambda decorator: decorator


class _Missing:
    """The absence of a default (None is a default like any other)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING = _Missing()


class _Field:
    """One field: its default or the factory of one, whether ``__init__`` takes it,
    ``__repr__`` shows it, ``__eq__`` and ``__hash__`` use it.  ``field()`` makes one
    without a name; the class's making names it."""

    __slots__ = ("compare", "default", "factory", "init", "name", "repr")

    def __init__(self, default: object = MISSING, factory: Callable[[], object] | None = None,
                 init: bool = True, repr: bool = True, compare: bool = True) -> None:
        self.name = ""
        self.default = default
        self.factory = factory
        self.init = init
        self.repr = repr
        self.compare = compare

    def initial(self, owner: str) -> object:
        """The value of a field its caller left out."""
        if self.factory is not None:
            return self.factory()
        if self.default is MISSING:
            raise TypeError(f"{owner}.__init__() missing required argument: '{self.name}'")
        return self.default


def field(*, default: Any = MISSING, default_factory: Callable[[], Any] | None = None,
          init: bool = True, repr: bool = True, compare: bool = True) -> Any:
    """A field's options (``_Field``), written as the field's default in the class body."""
    if default is not MISSING and default_factory is not None:
        raise TypeError("a field takes a default or a default_factory, not both")
    return _Field(default, default_factory, init, repr, compare)


class _Table:
    """Everything the shared methods need to know about one value class."""

    __slots__ = ("compared", "fields", "given", "immutable", "later", "post_init", "shown")

    def __init__(self, fields: tuple[_Field, ...], immutable: bool, post_init: bool) -> None:
        self.fields = fields
        self.given = tuple(f for f in fields if f.init)
        self.later = tuple(f for f in fields if not f.init and
                           (f.factory is not None or f.default is not MISSING))
        self.compared = _getter(tuple(f.name for f in fields if f.compare))
        self.shown = tuple(f.name for f in fields if f.repr)
        self.immutable = immutable
        self.post_init = post_init


def _getter(names: tuple[str, ...]) -> Callable[[object], tuple[object, ...]]:
    """The fields ``names`` of a value as a tuple, as dataclasses compare and hash them
    (a tuple also for one field: its comparison takes identity first, as theirs does)."""
    if len(names) > 1:
        getter: Callable[[object], tuple[object, ...]] = attrgetter(*names)
        return getter
    if names:
        one = attrgetter(names[0])
        return lambda value: (one(value),)
    return lambda value: ()


@dataclass_transform(frozen_default=True, field_specifiers=(field,))
def frozen(cls: type[T]) -> type[T]:
    """The frozen, slotted value class of the fields ``cls`` annotates (module docstring)."""
    return _make(cls, immutable=True)


@dataclass_transform(field_specifiers=(field,))
def mutable(cls: type[T]) -> type[T]:
    """A mutable, slotted class of the fields ``cls`` annotates: a draft inside one
    function, never a value that outlives it."""
    return _make(cls, immutable=False)


def _replace(obj: T, /, **changes: Any) -> T:
    """A copy of the value ``obj`` with the fields named in ``changes`` set anew
    (``replace``: type checkers see ``dataclasses.replace``, which they check)."""
    table = _table_of(obj)
    for item in table.given:
        if item.name not in changes:
            changes[item.name] = getattr(obj, item.name)
    for item in table.fields:
        if not item.init and item.name in changes:
            raise ValueError(f"field {item.name!r} is not set by __init__: replace cannot set it")
    return type(obj)(**changes)


def field_names(value_or_class: object) -> tuple[str, ...]:
    """The names of a value class's fields, in order."""
    cls = value_or_class if isinstance(value_or_class, type) else type(value_or_class)
    return tuple(item.name for item in _table_of(cls).fields)


def _table_of(value_or_class: object) -> _Table:
    table = getattr(value_or_class, "__value_table__", None)
    if not isinstance(table, _Table):
        raise TypeError(f"{value_or_class!r} is not a value class or value")
    return table


# --- making a class ----------------------------------------------------------------------


def _make(cls: type[T], *, immutable: bool) -> type[T]:
    """``cls`` again, with slots for its fields and the methods of its table."""
    if "__slots__" in cls.__dict__:
        raise TypeError(f"{cls.__name__}: a value class gets its __slots__ from its fields")
    for base in cls.__mro__[1:]:
        if "__value_table__" in base.__dict__:
            raise TypeError(f"{cls.__name__}: a value class does not inherit fields "
                            f"(from {base.__name__})")
    annotations: dict[str, object] = vars(cls).get("__annotations__", {})
    namespace = dict(cls.__dict__)
    fields: list[_Field] = []
    for name, annotation in annotations.items():
        if isinstance(annotation, str) and ("ClassVar" in annotation or "InitVar" in annotation):
            raise TypeError(f"{cls.__name__}.{name}: ClassVar and InitVar are not supported")
        given = namespace.pop(name, MISSING)
        item = given if isinstance(given, _Field) else _Field(given)
        if type(item.default).__hash__ is None:
            raise TypeError(f"{cls.__name__}.{name}: mutable default "
                            f"{type(item.default).__name__}: use field(default_factory=...)")
        item.name = name
        fields.append(item)
    table = _Table(tuple(fields), immutable, post_init=hasattr(cls, "__post_init__"))
    namespace.pop("__dict__", None)
    namespace.pop("__weakref__", None)
    namespace.update(
        __slots__=tuple(item.name for item in fields),
        __value_table__=table,
        __dataclass_fields__=_DataclassFields(),
    )
    methods = {
        "__match_args__": tuple(item.name for item in table.given),
        "__init__": _initializer(table, cls.__name__),
        "__repr__": _representer(table),
        "__reduce__": _reducer(table),
        **_comparers(table, cls.__name__, cls.__dict__),
    }
    for name, method in methods.items():
        if name not in cls.__dict__ or name == "__hash__":  # a class's own method stays
            namespace[name] = method
    metaclass: Callable[..., type[T]] = type(cls)
    return metaclass(cls.__name__, cls.__bases__, namespace)


# --- the methods, each a closure over the class's table: no generated code -----------------


_set = object.__setattr__  # the slot itself: a frozen class's own __setattr__ refuses


def _initializer(table: _Table, owner: str) -> Callable[..., None]:
    """``__init__``: the arguments fill a list in field order over the defaults; a field
    still MISSING is an error, one that stands for its ``default_factory`` gets a fresh
    value; ``map`` then sets the slots (the fastest loop Python has without generated
    code: as fast as the ``__init__`` dataclasses generate)."""
    given = table.given
    count = len(given)
    names = tuple(item.name for item in given)
    positions = {item.name: index for index, item in enumerate(given)}
    defaults = tuple(item if item.factory is not None else item.default for item in given)
    unset = tuple(index for index, item in enumerate(given)
                  if item.factory is not None or item.default is MISSING)
    later = table.later
    post_init = table.post_init

    def __init__(self: Any, /, *args: object, **kwargs: object) -> None:
        supplied = len(args)
        if supplied > count:
            raise TypeError(f"{owner}.__init__() takes {count} positional arguments "
                            f"but {supplied} were given")
        values: Sequence[object] = args
        if kwargs or supplied < count:
            values = [*args, *defaults[supplied:]]
            for name, argument in kwargs.items():
                index = positions.get(name, -1)
                if index < supplied:
                    raise TypeError(
                        f"{owner}.__init__() got an unexpected keyword argument '{name}'"
                        if index < 0 else
                        f"{owner}.__init__() got multiple values for argument '{name}'")
                values[index] = argument
            for index in unset:
                if values[index] is MISSING or values[index] is given[index]:
                    values[index] = given[index].initial(owner)
        for _ in map(_set, repeat(self), names, values):
            pass
        for item in later:
            _set(self, item.name, item.initial(owner))
        if post_init:
            self.__post_init__()

    return __init__


def _representer(table: _Table) -> Callable[[object], str]:
    """``__repr__``: ``Name(a=1, b='x')``, the fields that show."""
    shown = table.shown

    def __repr__(self: object) -> str:
        inner = ", ".join(f"{name}={getattr(self, name)!r}" for name in shown)
        return f"{type(self).__qualname__}({inner})"

    return __repr__


def _comparers(table: _Table, owner: str, own: Mapping[str, object]) -> dict[str, object]:
    """``__eq__`` and ``__hash__``, and for a frozen class ``__setattr__`` and
    ``__delattr__``, as dataclasses make them: the tuples of the fields that compare.

    The hash follows dataclasses' rule too: a class's own ``__hash__`` stays; else a
    frozen class hashes its fields and a mutable one is unhashable.  A frozen class
    that defines ``__setattr__`` or ``__delattr__`` is refused (TypeError).
    """
    compared = table.compared

    def __eq__(self: object, other: object) -> object:
        if other.__class__ is self.__class__:
            return compared(self) == compared(other)
        return NotImplemented

    def __hash__(self: object) -> int:
        return hash(compared(self))

    made: dict[str, object] = {"__eq__": __eq__}
    own_hash = own.get("__hash__", MISSING)
    if own_hash is not MISSING and not (own_hash is None and "__eq__" in own):
        made["__hash__"] = own_hash
    else:
        made["__hash__"] = __hash__ if table.immutable else None
    if table.immutable:
        for name in ("__setattr__", "__delattr__"):
            if name in own:
                raise TypeError(f"{owner}: a frozen value class cannot define {name}")
        made["__setattr__"] = _refuse_setattr
        made["__delattr__"] = _refuse_delattr
    return made


def _reducer(table: _Table) -> Callable[[object], tuple[type, tuple[object, ...]]]:
    """``__reduce__`` for copy and pickle: the class and the fields ``__init__`` takes."""
    get = _getter(tuple(item.name for item in table.given))

    def __reduce__(self: object) -> tuple[type, tuple[object, ...]]:
        return type(self), get(self)

    return __reduce__


def _refuse_setattr(self: object, name: str, _: object) -> None:
    raise _refusal(name)


def _refuse_delattr(self: object, name: str) -> None:
    raise _refusal(name)


def _refusal(name: str) -> AttributeError:
    """What dataclasses raise for a frozen instance (only ever on a bug: imported then)."""
    from dataclasses import FrozenInstanceError

    return FrozenInstanceError(f"cannot assign to field {name!r}")


class _DataclassFields:
    """``__dataclass_fields__``, built on first use from the class's own fields, so that
    dataclasses' functions accept value classes (module docstring)."""

    def __get__(self, instance: object, owner: type) -> dict[str, Any]:
        import dataclasses

        table = _table_of(owner)
        namespace: dict[str, Any] = {
            "__annotations__": vars(owner).get("__annotations__", {}),
            "__module__": owner.__module__,
            "__qualname__": owner.__qualname__,
        }
        for item in table.fields:
            options: dict[str, Any] = {"init": item.init, "repr": item.repr,
                                       "compare": item.compare}
            if item.factory is not None:
                options["default_factory"] = item.factory
            elif item.default is not MISSING:
                options["default"] = item.default
            namespace[item.name] = dataclasses.field(**options)
        plain = type(owner.__name__, (), namespace)
        twin: Any = dataclasses.dataclass(frozen=table.immutable)(plain)
        found: dict[str, Any] = twin.__dataclass_fields__
        owner.__dataclass_fields__ = found  # type: ignore[attr-defined]
        return found


if not TYPE_CHECKING:
    replace = _replace
