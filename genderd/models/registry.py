"""Discovery of models: the ``genderd.models`` entry-point group, and ``GENDERD_PLUGINS``
(``module:Class,...``; the current directory is searched for their modules after the installed
packages, so a model in a file beside the command needs no installing, and a folder named
``genderd`` there cannot shadow genderd).

An installed entry point that cannot be loaded (its module missing or failing, its Lua files
missing, not a model class, a bad name) is *broken*: it is left out, every command warns about
it in one line and goes on, and a command that needs that model fails in one line. A broken
``GENDERD_PLUGINS`` entry stops every command instead: the operator named it there."""

from __future__ import annotations

import dataclasses
import importlib
import logging
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from types import ModuleType
from typing import Any

from genderd.errors import ConfigurationError, InputError
from genderd.keys import Keys
from genderd.lua import Script
from genderd.models.base import Model
from genderd.models.python import PythonModel, PythonRuntime
from genderd.models.window import (
    TopWindow,
    WindowRuntime,
    window_days_problem,
    window_problem,
)
from genderd.settings import BEST, Settings

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "genderd.models"
#: a model's name and each of its aliases: they name its consumer group, its keys and its
#: result fields, and a name asked for is matched lowercased
MODEL_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")
NAME_RULE = "1 to 32 characters: lowercase letters, digits, '_' and '-', starting with a letter"


#: names a model cannot take: they mean something else where models are named
#: (GENDERD_DEFAULT_MODEL=best: the champion; the evaluation's baseline row)
RESERVED_NAMES = {
    BEST: "GENDERD_DEFAULT_MODEL=best names the champion",
    "majority": "the evaluation's baseline is called so",
}


def name_problem(name: object) -> str | None:
    """Why ``name`` cannot name a model (one phrase, with the rule), or None."""
    if isinstance(name, str) and name in RESERVED_NAMES:
        return f"{name!r} is reserved: {RESERVED_NAMES[name]}"
    if isinstance(name, str) and MODEL_NAME.fullmatch(name):
        return None
    return f"{name!r} is not a valid model name ({NAME_RULE})"


def labelled(name: str, aliases: Sequence[str]) -> str:
    """A model as messages name it, its aliases as aliases: ``top (alias model2)``."""
    if not aliases:
        return name
    return f"{name} (alias{'es' if len(aliases) > 1 else ''} {', '.join(aliases)})"


def labels(models: Iterable[Model | Registration]) -> list[str]:
    """Each model :func:`labelled`, sorted by name."""
    return [labelled(m.name, m.aliases) for m in sorted(models, key=lambda m: m.name)]


class UnknownModelError(InputError, KeyError):
    """A model name or alias that no installed model answers to; ``known``: the models it
    could have named, :func:`labelled`."""

    def __init__(
        self,
        name: str,
        known: list[str],
        *,
        left_out: str | None = None,
        broken: str | None = None,
    ) -> None:
        super().__init__(name)
        self.name = name
        self.known = known
        #: the loaded model's name when GENDERD_MODELS leaves it out (not unknown, not served)
        self.left_out = left_out
        #: why the installed entry point of that name cannot be loaded (not unknown either)
        self.broken = broken

    def __str__(self) -> str:
        if self.broken is not None:
            return f"model {self.name!r} cannot be loaded in this process: {self.broken}"
        if self.left_out is not None:
            return (
                f"model {self.left_out!r} is left out by GENDERD_MODELS in this process; "
                f"served: {', '.join(self.known)}"
            )
        return f"unknown model {self.name!r}; known: {', '.join(self.known)}"


class PluginError(ConfigurationError, ValueError):
    """A model that cannot be loaded: one line for users (the CLI exits 2 with it)."""


#: a class a model may be registered as: a :class:`PythonModel` or :class:`TopWindow`
#: subclass (the user's class, wrapped by the framework), or a :class:`Model` subclass
#: (built-in and Lua-backed models, the framework's model themselves)
ModelClass = type[PythonModel] | type[TopWindow] | type[Model]


@dataclass(frozen=True)
class Registration:
    """A registered model class and how the framework builds its model from it: the one
    place that knows the kinds of model classes."""

    cls: ModelClass
    where: str  # where it was found, for messages
    #: an installed entry point's: when it cannot be built, the other models go on
    installed: bool = False

    @classmethod
    def of(cls, obj: object, where: str) -> Registration:
        """``obj`` registered, or :class:`PluginError` when it is not a model class, its name
        or an alias breaks :data:`NAME_RULE`, its window is out of bounds or its Lua files
        cannot be loaded."""
        if not (isinstance(obj, type) and issubclass(obj, (PythonModel, TopWindow, Model))):
            raise PluginError(
                f"{where} is not a genderd model class (a PythonModel, TopWindow or Model subclass)"
            )
        if not isinstance(getattr(obj, "name", None), str) or not obj.name:
            raise PluginError(f"{where} has no name")
        aliases = getattr(obj, "aliases", ())
        if not isinstance(aliases, tuple | list):
            raise PluginError(f"{where}: aliases must be a tuple of names")
        problem = next(filter(None, map(name_problem, (obj.name, *aliases))), None)
        if issubclass(obj, TopWindow):
            problem = problem or window_days_problem(obj.window_days)
        if issubclass(obj, Model):
            problem = problem or _lua_problem(obj)
        if problem:
            raise PluginError(f"{where}: {problem}")
        return cls(obj, where)

    @property
    def name(self) -> str:
        return self.cls.name

    @property
    def aliases(self) -> tuple[str, ...]:
        return tuple(self.cls.aliases)

    def settings_problem(self, settings: Settings) -> str | None:
        """Why this model cannot run with ``settings`` (one line), or None."""
        if issubclass(self.cls, TopWindow):
            return window_problem(self.cls, settings)
        if issubclass(self.cls, Model):
            return self.cls.settings_problem(settings)
        return None

    def build(self, settings: Settings, keys: Keys, oldest_layout: int = 1) -> Model:
        """The framework's model of this class for a deployment; :class:`PluginError` (one
        line) when the class fails to be instantiated (a user's ``__init__`` that raises)."""
        try:
            return self._build(settings, keys, oldest_layout)
        except Exception as error:
            said = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
            raise PluginError(f"{self.where}: cannot be built: {said}") from None

    def _build(self, settings: Settings, keys: Keys, oldest_layout: int) -> Model:
        if issubclass(self.cls, PythonModel):
            return PythonRuntime(self.cls, settings, keys, oldest_layout=oldest_layout)
        if issubclass(self.cls, TopWindow):
            return WindowRuntime(self.cls, settings, keys, oldest_layout=oldest_layout)
        return self.cls(settings, keys, oldest_layout=oldest_layout)


def _lua_problem(cls: type[Model]) -> str | None:
    """Why the Lua files of the Lua-backed model class ``cls`` cannot be loaded (missing, in a
    package that is not there, or a cycle), or None. Loaded once per process: the model built
    from ``cls`` later finds them in the loader's cache."""
    package = getattr(cls, "script_package", "?")
    if not getattr(cls, "apply_files", ()):
        return "names no Lua file (apply_files)"
    try:
        for files in (cls.apply_files, cls.refresh_files or ()):
            if files:
                Script.from_files(*files, package=package)
    except (FileNotFoundError, ModuleNotFoundError, ValueError) as error:
        return f"cannot load its Lua files (package {package!r}): {error}"
    return None


def _imported(load: Callable[[], Any], what: str) -> Any:
    """What ``load`` imports; any problem, even a module that raises ``SystemExit`` or
    ``KeyboardInterrupt`` as it is imported, is one :class:`PluginError` line."""
    try:
        return load()
    except PluginError:
        raise
    except (Exception, SystemExit, KeyboardInterrupt) as error:  # the module's own error too
        said = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        raise PluginError(f"{what}: {said}") from None


def _import_plugin(module_name: str) -> ModuleType:
    """Import a plug-in's module. The current directory is searched after the installed
    packages (appended to the import path, never put first), and never for genderd itself:
    a clone of the repository there must not shadow the installed genderd."""
    here = os.getcwd()
    if here not in sys.path and "" not in sys.path:
        sys.path.append(here)
    return importlib.import_module(module_name)


def load_plugin(path: str) -> Registration:
    """The class named by ``module:Class`` (modules in the current directory are found too,
    after the installed ones). Any problem, even a module that raises ``SystemExit`` or
    ``KeyboardInterrupt`` as it is imported, is one :class:`PluginError` line."""
    module_name, _, class_name = path.partition(":")
    if not module_name or not class_name:
        raise PluginError(f"GENDERD_PLUGINS: {path!r} is not module:Class")
    module = _imported(
        lambda: _import_plugin(module_name), f"GENDERD_PLUGINS: cannot import {module_name!r}"
    )
    obj = getattr(module, class_name, None)
    if obj is None:
        raise PluginError(f"GENDERD_PLUGINS: {module_name!r} has no {class_name!r}")
    return Registration.of(obj, f"GENDERD_PLUGINS: {path}")


def _entry_point(point: EntryPoint) -> Registration:
    """The model class an installed entry point registers (:class:`PluginError` if none)."""
    named = f"entry point {point.name!r} ({point.value})"  # in messages
    registered = Registration.of(_imported(point.load, f"{named}: cannot import"), named)
    return dataclasses.replace(registered, where=f"entry point {point.name!r}", installed=True)


@dataclass(frozen=True)
class Discovery:
    """The model classes found, and the installed entry points that cannot be loaded."""

    found: list[Registration]
    #: broken entry points: entry-point name -> why it cannot be loaded (one line)
    broken: dict[str, str]


def discover(plugins: Sequence[str] = ()) -> Discovery:
    """Every model class registered under the entry-point group, and the ``plugins``
    (``module:Class``), sorted by name; an entry point that cannot be loaded is left out, in
    :attr:`Discovery.broken`. Raises :class:`PluginError` for a bad plugin, or a name or
    alias that two models use."""
    found: list[Registration] = []
    broken: dict[str, str] = {}
    for point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            found.append(_entry_point(point))
        except PluginError as error:
            broken[point.name] = str(error)
    found += [load_plugin(path) for path in plugins]
    classes: dict[str, Registration] = {}
    owner: dict[str, str] = {}
    for registration in found:
        cls = registration.cls
        same = classes.get(cls.name)
        if same is not None and same.cls is cls:
            continue  # the same class twice (an entry point also named in GENDERD_PLUGINS)
        for name in (cls.name, *cls.aliases):
            if name in owner:
                raise PluginError(
                    f"{registration.where}: model name or alias {name!r} is already used by "
                    f"{owner[name]}"
                )
            owner[name] = f"{cls.__module__}.{cls.__qualname__}"
        classes[cls.name] = registration
    broken = {name: why for name, why in broken.items() if name not in owner}
    return Discovery([classes[name] for name in sorted(classes)], broken)


def check_models(settings: Settings) -> Discovery:
    """The models of ``settings`` (see :func:`discover`), each checked against the settings
    (:meth:`Registration.settings_problem`); raise :class:`PluginError` for the first problem."""
    found = discover(settings.plugins)
    for registration in found.found:
        problem = registration.settings_problem(settings)
        if problem:
            raise PluginError(f"model {registration.name!r}: {problem}")
    return found


def select(
    settings: Settings, loaded: Sequence[Model], broken: Mapping[str, str] | None = None
) -> list[Model]:
    """The models of ``loaded`` that ``GENDERD_MODELS`` selects (all of them when it is not
    set), in ``loaded``'s order. Raises :class:`PluginError` for a name no loaded model
    answers to (saying so for one of a ``broken`` entry point), or a default model
    (``GENDERD_DEFAULT_MODEL``, when set) left out."""
    if not settings.models:
        return list(loaded)
    names = {alias: model.name for model in loaded for alias in (model.name, *model.aliases)}
    chosen = set()
    for name in settings.models:
        canonical = names.get(name.strip().lower())
        if canonical is None:
            why = (broken or {}).get(name.strip().lower())
            unknown = UnknownModelError(name, labels(loaded), broken=why)
            raise PluginError(f"GENDERD_MODELS: {unknown}")
        chosen.add(canonical)
    default = names.get(settings.default_model.strip().lower())
    if settings.serves_best:  # the champion starts as GENDERD_CHAMPION_START: served here
        if names.get(settings.champion_start.strip().lower()) not in chosen:
            raise PluginError(
                f"GENDERD_CHAMPION_START {settings.champion_start!r} is not among "
                "GENDERD_MODELS (GENDERD_DEFAULT_MODEL=best serves it until the champion changes)"
            )
    elif "default_model" in settings.model_fields_set and default not in chosen:
        raise PluginError(
            f"GENDERD_DEFAULT_MODEL {settings.default_model!r} is not among GENDERD_MODELS"
        )
    return [model for model in loaded if model.name in chosen]


class Registry:
    """The models one deployment's process runs and serves (``GENDERD_MODELS``; all the
    installed ones by default), instantiated with the deployment's settings; and every model
    it has loaded (:attr:`loaded`, for erasure and for naming the ones left out)."""

    def __init__(
        self,
        models: list[Model],
        *,
        loaded: list[Model] | None = None,
        where: Mapping[str, str] | None = None,
        broken: Mapping[str, str] | None = None,
    ) -> None:
        self._models = {model.name: model for model in models}
        #: every model this process loaded, selected or not, by name
        self.loaded: dict[str, Model] = {m.name: m for m in (models if loaded is None else loaded)}
        #: the installed entry points that cannot be loaded: name -> why (one line)
        self.broken: dict[str, str] = dict(broken or {})
        self._where = dict(where or {})
        self._names: dict[str, str] = {}
        for model in models:
            for name in (model.name, *model.aliases):
                if name in self._names:
                    raise ValueError(f"model name or alias {name!r} is used twice")
                self._names[name] = model.name

    @classmethod
    def load(cls, settings: Settings, keys: Keys, oldest_layout: int = 1) -> Registry:
        """Build every registered model for a deployment's ``settings``, ``keys`` and oldest
        data layout (:func:`genderd.layout.oldest_layout`), and select the ones
        ``GENDERD_MODELS`` names."""
        found = check_models(settings)
        loaded, broken = [], dict(found.broken)
        for registration in found.found:
            try:
                loaded.append(registration.build(settings, keys, oldest_layout))
            except PluginError as error:
                if not registration.installed:
                    raise
                broken[registration.name] = str(error)  # left out, as a broken entry point
                log.warning("%s; the models that do not need it go on", error)
        where = {registration.name: registration.where for registration in found.found}
        chosen = select(settings, loaded, broken)
        return cls(chosen, loaded=loaded, where=where, broken=broken)

    def with_layout(self, oldest_layout: int) -> Registry:
        """The same models built again for the oldest data layout a deployment may hold."""
        loaded = [
            Registration(model.defined_by, self.where(model.name)).build(
                model.settings, model.keys, oldest_layout
            )
            for model in self.loaded.values()
        ]
        chosen = [model for model in loaded if model.name in self._models]
        return Registry(chosen, loaded=loaded, where=self._where, broken=self.broken)

    def __iter__(self) -> Iterator[Model]:
        return iter(self._models.values())

    def __len__(self) -> int:
        return len(self._models)

    def names(self) -> list[str]:
        return list(self._models)

    def where(self, name: str) -> str:
        """Where the model called ``name`` was found ("entry point 'top'",
        "GENDERD_PLUGINS: mine:Last5"; "" when not known)."""
        return self._where.get(name, "")

    def get(self, name_or_alias: str) -> Model:
        """The model called ``name_or_alias``; raise :class:`UnknownModelError` otherwise (saying
        so when the model is loaded but left out, or its entry point is broken)."""
        wanted = name_or_alias.strip().lower()
        canonical = self._names.get(wanted)
        if canonical is None:
            left_out = next(
                (m.name for m in self.loaded.values() if wanted in (m.name, *m.aliases)), None
            )
            raise UnknownModelError(
                name_or_alias,
                labels(self),
                left_out=left_out,
                broken=self.broken.get(wanted),
            )
        return self._models[canonical]

    def default(self, settings: Settings) -> Model:
        """The model of a lookup that names none: ``GENDERD_DEFAULT_MODEL``, or, when that is
        left out by ``GENDERD_MODELS`` without being set, the first model served. A default
        set to a model not served here is a :class:`PluginError` naming the setting (the API,
        and `serve` before it starts one, refuse it in one line). With ``best``, the
        champion's start (``GENDERD_CHAMPION_START``): the API then follows the champion
        (:mod:`genderd.grading.champion`)."""
        if settings.serves_best:
            try:
                return self.get(settings.champion_start)
            except UnknownModelError as error:
                raise PluginError(f"GENDERD_CHAMPION_START: {error}") from None
        try:
            return self.get(settings.default_model)
        except UnknownModelError as error:
            if "default_model" in settings.model_fields_set:
                raise PluginError(f"GENDERD_DEFAULT_MODEL: {error}") from None
            if not self._models:
                raise
            return next(iter(self._models.values()))
