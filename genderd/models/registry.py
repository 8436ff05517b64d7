"""Discovery of models: the ``genderd.models`` entry-point group, and ``GENDERD_PLUGINS``
(``module:Class,...``; the current directory is searched for their modules after the installed
packages, so a model in a file beside the command needs no installing, and a folder named
``genderd`` there cannot shadow genderd)."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from types import ModuleType

from genderd.errors import ConfigurationError, InputError
from genderd.keys import Keys
from genderd.models.base import Model
from genderd.models.python import PythonModel, PythonRuntime
from genderd.models.window import TopWindow, WindowRuntime, window_problem
from genderd.settings import Settings

ENTRY_POINT_GROUP = "genderd.models"


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

    def __init__(self, name: str, known: list[str], *, left_out: str | None = None) -> None:
        super().__init__(name)
        self.name = name
        self.known = known
        #: the loaded model's name when GENDERD_MODELS leaves it out (not unknown, not served)
        self.left_out = left_out

    def __str__(self) -> str:
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

    @classmethod
    def of(cls, obj: object, where: str) -> Registration:
        """``obj`` registered, or :class:`PluginError` when it is not a model class."""
        if not (isinstance(obj, type) and issubclass(obj, (PythonModel, TopWindow, Model))):
            raise PluginError(
                f"{where} is not a genderd model class (a PythonModel, TopWindow or Model subclass)"
            )
        if not isinstance(getattr(obj, "name", None), str) or not obj.name:
            raise PluginError(f"{where} has no name")
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
        """The framework's model of this class for a deployment."""
        if issubclass(self.cls, PythonModel):
            return PythonRuntime(self.cls, settings, keys, oldest_layout=oldest_layout)
        if issubclass(self.cls, TopWindow):
            return WindowRuntime(self.cls, settings, keys, oldest_layout=oldest_layout)
        try:
            return self.cls(settings, keys, oldest_layout=oldest_layout)
        except (FileNotFoundError, ModuleNotFoundError, ValueError) as error:
            # a Lua-backed model's files: missing, in a package that is not there, or a cycle
            package = getattr(self.cls, "script_package", "?")
            raise PluginError(
                f"{self.where}: cannot load its Lua files (package {package!r}): {error}"
            ) from None


def _import_plugin(module_name: str) -> ModuleType:
    """Import a plug-in's module. The current directory is searched after the installed
    packages (appended to the import path, never put first), and never for genderd itself:
    a clone of the repository there must not shadow the installed genderd."""
    here = os.getcwd()
    if here not in sys.path and "" not in sys.path:
        sys.path.append(here)
    return importlib.import_module(module_name)


def _said(error: BaseException) -> str:
    """An import's error in one line: its type, and its message when it has one."""
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


def _entry_point(point: EntryPoint) -> Registration:
    """The class an installed ``genderd.models`` entry point names; any problem importing it
    (a package installed without a module it needs, a stale install) is one
    :class:`PluginError` line, as for ``GENDERD_PLUGINS``."""
    where = f"entry point {point.name!r}"
    try:
        obj = point.load()
    except (Exception, SystemExit, KeyboardInterrupt) as error:
        raise PluginError(f"{where}: cannot import {point.value!r}: {_said(error)}") from None
    return Registration.of(obj, where)


def load_plugin(path: str) -> Registration:
    """The class named by ``module:Class`` (modules in the current directory are found too,
    after the installed ones). Any problem, even a module that raises ``SystemExit`` or
    ``KeyboardInterrupt`` as it is imported, is one :class:`PluginError` line."""
    module_name, _, class_name = path.partition(":")
    if not module_name or not class_name:
        raise PluginError(f"GENDERD_PLUGINS: {path!r} is not module:Class")
    try:
        module = _import_plugin(module_name)
    except PluginError:
        raise
    except (Exception, SystemExit, KeyboardInterrupt) as error:  # the module's own error too
        said = _said(error)
        raise PluginError(f"GENDERD_PLUGINS: cannot import {module_name!r}: {said}") from None
    obj = getattr(module, class_name, None)
    if obj is None:
        raise PluginError(f"GENDERD_PLUGINS: {module_name!r} has no {class_name!r}")
    return Registration.of(obj, f"GENDERD_PLUGINS: {path}")


def discover(plugins: Sequence[str] = ()) -> list[Registration]:
    """Every model class registered under the entry-point group, and the ``plugins``
    (``module:Class``), sorted by name. Raises :class:`PluginError` for a bad plugin, or a
    name or alias that two models use."""
    classes: dict[str, Registration] = {}
    found = [_entry_point(point) for point in entry_points(group=ENTRY_POINT_GROUP)]
    found += [load_plugin(path) for path in plugins]
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
    return [classes[name] for name in sorted(classes)]


def check_models(settings: Settings) -> list[Registration]:
    """The models of ``settings`` (see :func:`discover`), each checked against the settings
    (:meth:`Registration.settings_problem`); raise :class:`PluginError` for the first problem."""
    found = discover(settings.plugins)
    for registration in found:
        problem = registration.settings_problem(settings)
        if problem:
            raise PluginError(f"model {registration.name!r}: {problem}")
    return found


def select(settings: Settings, loaded: Sequence[Model]) -> list[Model]:
    """The models of ``loaded`` that ``GENDERD_MODELS`` selects (all of them when it is not
    set), in ``loaded``'s order. Raises :class:`PluginError` for a name no loaded model
    answers to, or a default model (``GENDERD_DEFAULT_MODEL``, when set) left out."""
    if not settings.models:
        return list(loaded)
    names = {alias: model.name for model in loaded for alias in (model.name, *model.aliases)}
    chosen = set()
    for name in settings.models:
        canonical = names.get(name.strip().lower())
        if canonical is None:
            raise PluginError(f"GENDERD_MODELS: {UnknownModelError(name, labels(loaded))}")
        chosen.add(canonical)
    default = names.get(settings.default_model.strip().lower())
    if "default_model" in settings.model_fields_set and default not in chosen:
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
    ) -> None:
        self._models = {model.name: model for model in models}
        #: every model this process loaded, selected or not, by name
        self.loaded: dict[str, Model] = {m.name: m for m in (models if loaded is None else loaded)}
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
        loaded = [registration.build(settings, keys, oldest_layout) for registration in found]
        where = {registration.name: registration.where for registration in found}
        return cls(select(settings, loaded), loaded=loaded, where=where)

    def with_layout(self, oldest_layout: int) -> Registry:
        """The same models built again for the oldest data layout a deployment may hold."""
        loaded = [
            Registration(model.defined_by, self.where(model.name)).build(
                model.settings, model.keys, oldest_layout
            )
            for model in self.loaded.values()
        ]
        chosen = [model for model in loaded if model.name in self._models]
        return Registry(chosen, loaded=loaded, where=self._where)

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
        """The model called ``name_or_alias``; raise :class:`UnknownModelError` otherwise."""
        wanted = name_or_alias.strip().lower()
        canonical = self._names.get(wanted)
        if canonical is None:
            left_out = next(
                (m.name for m in self.loaded.values() if wanted in (m.name, *m.aliases)), None
            )
            raise UnknownModelError(name_or_alias, labels(self), left_out=left_out)
        return self._models[canonical]

    def default(self, settings: Settings) -> Model:
        """The model of a lookup that names none: ``GENDERD_DEFAULT_MODEL``, or, when that is
        left out by ``GENDERD_MODELS`` without being set, the first model served."""
        try:
            return self.get(settings.default_model)
        except UnknownModelError:
            if "default_model" in settings.model_fields_set or not self._models:
                raise
            return next(iter(self._models.values()))
