"""Value classes with ``@dataclass`` semantics, without importing ``dataclasses``.

``dataclasses`` imports ``inspect`` (and with it ``ast``, ``dis``, ``tokenize``...) and
``exec``-s generated methods for every class: ~8 ms of every ``pybpf run`` for a dozen
classes.  A :class:`Record` subclass lists its fields and defaults; it gets what a dataclass
has: positional or keyword construction with defaults (``Factory`` for mutable ones),
field-wise ``==`` between instances of the same class, the dataclass ``repr``, and
``_replace(**changes)`` (``dataclasses.replace``).  :class:`FrozenRecord` adds immutability
and a field-wise hash, as ``frozen=True`` does.
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar


class Factory:
    """A default computed per instance (``field(default_factory=...)``)."""

    __slots__ = ("make",)

    def __init__(self, make: Callable[[], Any]) -> None:
        self.make = make


_MISSING = object()
_set = object.__setattr__


class Record:
    """Mutable value class: set ``_fields`` (in order) and ``_defaults`` (trailing fields)."""

    _fields: ClassVar[tuple[str, ...]] = ()
    _defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        fields = self._fields
        if len(args) > len(fields):
            raise TypeError(f"{type(self).__name__}() takes {len(fields)} positional "
                            f"arguments but {len(args)} were given")
        for name, value in zip(fields, args):
            _set(self, name, value)
        for name in fields[len(args):]:
            value = kwargs.pop(name, _MISSING)
            if value is _MISSING:
                value = self._defaults.get(name, _MISSING)
                if value is _MISSING:
                    raise TypeError(f"{type(self).__name__}() missing required argument: "
                                    f"{name!r}")
                if isinstance(value, Factory):
                    value = value.make()
            _set(self, name, value)
        if kwargs:
            name = next(iter(kwargs))
            if name in fields:
                raise TypeError(f"{type(self).__name__}() got multiple values for argument "
                                f"{name!r}")
            raise TypeError(f"{type(self).__name__}() got an unexpected keyword argument "
                            f"{name!r}")

    def _astuple(self) -> tuple:
        return tuple([getattr(self, f) for f in self._fields])

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._astuple() == other._astuple()  # type: ignore[attr-defined]

    __hash__ = None  # type: ignore[assignment]  # as a dataclass with eq and not frozen

    def __repr__(self) -> str:
        args = ", ".join(f"{f}={getattr(self, f)!r}" for f in self._fields)
        return f"{type(self).__qualname__}({args})"

    def _replace(self, **changes: Any) -> Any:
        """A copy with some fields changed (``dataclasses.replace``)."""
        kw = {f: getattr(self, f) for f in self._fields}
        for name in changes:
            if name not in kw:
                raise TypeError(f"{type(self).__name__} has no field {name!r}")
        kw.update(changes)
        return type(self)(**kw)


class FrozenRecord(Record):
    """Immutable value class (``@dataclass(frozen=True)``): hashable, no assignment."""

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(self._astuple())

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"cannot assign to field {name!r} of a frozen {type(self).__name__}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r} of a frozen {type(self).__name__}")
