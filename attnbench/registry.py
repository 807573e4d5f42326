"""One generic registry for kernels, masks and CP methods, plus plugin loading.

Entries are registered with a decorator or as lazy ``"module:attr"`` targets that are
imported on first use (so heavy back ends cost nothing until asked for). Duplicate names
are refused; unknown names are answered with "did you mean ...".

Third-party code extends attnbench without editing it: every entry point of the group
``attnbench.plugins`` and every module named in ``ATTNBENCH_PLUGINS`` (comma-separated)
is imported once, before the first lookup; importing it registers its entries.
"""

from __future__ import annotations

import difflib
import importlib
import os
import pkgutil
import threading
from importlib import metadata
from typing import Callable, Generic, Iterable, Iterator, TypeVar

from attnbench.errors import UnknownNameError, UserError

T = TypeVar("T")

PLUGIN_GROUP = "attnbench.plugins"
PLUGIN_ENV = "ATTNBENCH_PLUGINS"


def normalise_name(name: str) -> str:
    """The letters and digits of `name`, lower case: "Flash-Attn_2" and "flashattn2" are one name."""
    return "".join(ch for ch in str(name).lower() if ch.isalnum())


def _is_lazy(target: object) -> bool:
    return isinstance(target, str) and ":" in target


def import_target(target: str) -> object:
    """Import ``"package.module:attr"`` and return the attribute."""
    module_name, _, attr = target.partition(":")
    module = importlib.import_module(module_name)
    try:
        return getattr(module, attr)
    except AttributeError as exc:
        raise UserError(f"{module_name!r} has no attribute {attr!r} (target {target!r})") from exc


class Registry(Generic[T]):
    """Name -> object, for one kind of thing ("kernel", "mask", "cp method").

    ``builtin_packages`` are scanned (every module imported) on first lookup, so a new
    built-in entry is one new file that registers itself, plus nothing else.
    ``materialize`` turns what was registered into what lookups return (e.g. a class into
    an instance).
    """

    def __init__(
        self,
        kind: str,
        *,
        builtin_packages: tuple[str, ...] = (),
        materialize: Callable[[object], T] | None = None,
    ) -> None:
        self.kind = kind
        self._builtin_packages = builtin_packages
        self._materialize = materialize or (lambda obj: obj)  # type: ignore[assignment]
        self._entries: dict[str, object] = {}
        self._loaded = False
        self._lock = threading.RLock()

    # -- registration -------------------------------------------------------------
    def add(self, name: str, target: object) -> None:
        """Register `target` (an object, or a lazy ``"module:attr"`` string) as `name`."""
        with self._lock:
            if name in self._entries:
                existing = self._entries[name]
                if existing is target or (
                    _is_lazy(existing) and not _is_lazy(target) and self._lazy_points_to(existing, target)
                ):
                    self._entries[name] = target
                    return
                raise UserError(f"{self.kind} {name!r} is already registered; choose another name")
            self._entries[name] = target

    def register(self, name: str | None = None) -> Callable[[T], T]:
        """Decorator: ``@KERNELS.register("my_kernel")``. The name defaults to ``obj.name``."""

        def decorator(obj):
            key = name or getattr(obj, "name", None)
            if not key:
                raise UserError(f"{self.kind} {obj!r} needs a name")
            self.add(key, obj)
            return obj

        return decorator

    def unregister(self, name: str) -> None:
        with self._lock:
            self._entries.pop(name, None)

    @staticmethod
    def _lazy_points_to(target: str, obj: object) -> bool:
        module_name, _, attr = target.partition(":")
        return getattr(obj, "__module__", None) == module_name and getattr(obj, "__name__", None) == attr

    # -- lookup -------------------------------------------------------------------
    def _ensure_loaded(self) -> None:
        if self._loaded:
            return
        with self._lock:
            if self._loaded:
                return
            self._loaded = True
            for package_name in self._builtin_packages:
                package = importlib.import_module(package_name)
                for info in pkgutil.iter_modules(package.__path__):
                    if not info.name.startswith("_"):
                        importlib.import_module(f"{package_name}.{info.name}")
            load_plugins()

    def get(self, name: str) -> T:
        self._ensure_loaded()
        try:
            target = self._entries[name]
        except KeyError:
            raise UnknownNameError(self._unknown_message(name)) from None
        if _is_lazy(target):
            obj = self._materialize(import_target(target))  # type: ignore[arg-type]
        else:
            obj = self._materialize(target)
        self._entries[name] = obj
        return obj  # type: ignore[return-value]

    def _unknown_message(self, name: str) -> str:
        known = sorted(self._entries)
        close = self.suggest(name)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        return f"unknown {self.kind} {name!r}{hint} (known: {', '.join(known) or 'none'})"

    def aliases(self) -> dict[str, list[str]]:
        """Normalised alias -> registered names, from each entry's ``aliases`` attribute (the
        names people type for it, e.g. "flash_attn2" for ``fa2``); lazy entries have none yet."""
        out: dict[str, list[str]] = {}
        for entry_name, target in self._entries.items():
            for alias in (entry_name, *(() if _is_lazy(target) else getattr(target, "aliases", ()) or ())):
                out.setdefault(normalise_name(alias), []).append(entry_name)
        return out

    def meant_by(self, name: str) -> list[str]:
        """The registered names that `name` is an alias or a spelling variant of."""
        self._ensure_loaded()
        return list(dict.fromkeys(self.aliases().get(normalise_name(name), [])))

    def suggest(self, name: str, among: Iterable[str] | None = None, n: int = 3) -> list[str]:
        """Registered names (only those in `among`, if given) that `name` probably meant:
        an alias or a spelling variant first, then close spellings."""
        self._ensure_loaded()
        allowed = set(self._entries if among is None else among)
        aliases = self.aliases()
        key = normalise_name(name)
        found = [entry for entry in self.meant_by(name) if entry in allowed]
        if found:  # an alias is what the user meant: no guessing beyond it
            return found[:n]
        for close in difflib.get_close_matches(key, list(aliases), n=n + 3, cutoff=0.5):
            found += [entry for entry in aliases[close] if entry in allowed]
        found += difflib.get_close_matches(name, sorted(allowed), n=n, cutoff=0.5)  # names outside the registry
        return list(dict.fromkeys(found))[:n]

    def check(self, name: str) -> None:
        """Raise UnknownNameError (with suggestions) if `name` is not registered."""
        self._ensure_loaded()
        if name not in self._entries:
            raise UnknownNameError(self._unknown_message(name))

    def names(self) -> list[str]:
        self._ensure_loaded()
        return sorted(self._entries)

    def items(self) -> Iterator[tuple[str, T]]:
        for name in self.names():
            yield name, self.get(name)

    def __contains__(self, name: object) -> bool:
        self._ensure_loaded()
        return name in self._entries

    def __len__(self) -> int:
        return len(self.names())


# -- plugins --------------------------------------------------------------------------
_plugins_loaded = False
_plugin_lock = threading.RLock()


def plugin_modules_from_env() -> list[str]:
    raw = os.environ.get(PLUGIN_ENV, "")
    return [part.strip() for part in raw.split(",") if part.strip()]


def load_plugins() -> None:
    """Import every plugin once: entry points of `attnbench.plugins`, then ATTNBENCH_PLUGINS."""
    global _plugins_loaded
    with _plugin_lock:
        if _plugins_loaded:
            return
        _plugins_loaded = True
        for entry_point in metadata.entry_points(group=PLUGIN_GROUP):
            try:
                entry_point.load()
            except Exception as exc:  # a broken plugin is the user's input: say so in one line
                raise UserError(f"plugin entry point {entry_point.name!r} ({entry_point.value}) failed to load: {exc}") from exc
        for module_name in plugin_modules_from_env():
            try:
                importlib.import_module(module_name)
            except Exception as exc:
                raise UserError(f"{PLUGIN_ENV} module {module_name!r} failed to import: {exc}") from exc
