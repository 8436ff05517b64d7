"""Discovery of models: the ``genderd.models`` entry-point group, and ``GENDERD_PLUGINS``
(``module:Class,...``, imported with the current directory on the import path, so a model in
a file beside the command needs no installing)."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterator, Sequence
from importlib.metadata import entry_points

from genderd.errors import ConfigurationError, InputError
from genderd.keys import Keys
from genderd.models.base import Model
from genderd.settings import Settings

ENTRY_POINT_GROUP = "genderd.models"


class UnknownModelError(InputError, KeyError):
    """A model name or alias that no installed model answers to."""

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(name)
        self.name = name
        self.known = known

    def __str__(self) -> str:
        return f"unknown model {self.name!r}; known: {', '.join(self.known)}"


def names(classes: list[type[Model]]) -> list[str]:
    """Every name and alias the model classes answer to."""
    return sorted(name for cls in classes for name in (cls.name, *cls.aliases))


class PluginError(ConfigurationError, ValueError):
    """A model that cannot be loaded: one line for users (the CLI exits 2 with it)."""


def _model_class(obj: object, where: str) -> type[Model]:
    if not (isinstance(obj, type) and issubclass(obj, Model)):
        raise PluginError(f"{where} is not a genderd model class (a Model subclass)")
    if not isinstance(getattr(obj, "name", None), str) or not obj.name:
        raise PluginError(f"{where} has no name")
    return obj


def load_plugin(path: str) -> type[Model]:
    """The class named by ``module:Class`` (the current directory is importable)."""
    module_name, _, class_name = path.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # an import error, or the module's own error
        raise PluginError(
            f"GENDERD_PLUGINS: cannot import {module_name!r}: {type(error).__name__}: {error}"
        ) from None
    obj = getattr(module, class_name, None)
    if obj is None:
        raise PluginError(f"GENDERD_PLUGINS: {module_name!r} has no {class_name!r}")
    return _model_class(obj, f"GENDERD_PLUGINS: {path}")


def discover(plugins: Sequence[str] = ()) -> list[type[Model]]:
    """Every model class registered under the entry-point group, and the ``plugins``
    (``module:Class``), sorted by name. Raises :class:`PluginError` for a bad plugin, or a
    name or alias that two models use."""
    classes: dict[str, type[Model]] = {}
    found: list[tuple[str, type[Model]]] = []
    for point in entry_points(group=ENTRY_POINT_GROUP):
        found.append((f"entry point {point.name!r}", _model_class(point.load(), point.name)))
    found += [(f"GENDERD_PLUGINS: {path}", load_plugin(path)) for path in plugins]
    owner: dict[str, str] = {}
    for where, cls in found:
        if classes.get(cls.name) is cls:
            continue  # the same class twice (an entry point also named in GENDERD_PLUGINS)
        for name in (cls.name, *cls.aliases):
            if name in owner:
                raise PluginError(
                    f"{where}: model name or alias {name!r} is already used by {owner[name]}"
                )
            owner[name] = f"{cls.__module__}.{cls.__qualname__}"
        classes[cls.name] = cls
    return [classes[name] for name in sorted(classes)]


def check_models(settings: Settings) -> list[type[Model]]:
    """The models of ``settings`` (see :func:`discover`), each checked against the settings
    (:meth:`Model.settings_problem`); raise :class:`PluginError` for the first problem."""
    classes = discover(settings.plugins)
    for cls in classes:
        problem = cls.settings_problem(settings)
        if problem:
            raise PluginError(f"model {cls.name!r}: {problem}")
    return classes


class Registry:
    """The installed models, instantiated with one deployment's settings."""

    def __init__(self, models: list[Model]) -> None:
        self._models = {model.name: model for model in models}
        self._names: dict[str, str] = {}
        for model in models:
            for name in (model.name, *model.aliases):
                if name in self._names:
                    raise ValueError(f"model name or alias {name!r} is used twice")
                self._names[name] = model.name

    @classmethod
    def load(cls, settings: Settings, keys: Keys) -> Registry:
        """Instantiate every registered model for a deployment's ``settings`` and ``keys``."""
        return cls([model_cls(settings, keys) for model_cls in check_models(settings)])

    def __iter__(self) -> Iterator[Model]:
        return iter(self._models.values())

    def __len__(self) -> int:
        return len(self._models)

    def names(self) -> list[str]:
        return list(self._models)

    def get(self, name_or_alias: str) -> Model:
        """The model called ``name_or_alias``; raise :class:`UnknownModelError` otherwise."""
        canonical = self._names.get(name_or_alias.strip().lower())
        if canonical is None:
            raise UnknownModelError(name_or_alias, sorted(self._names))
        return self._models[canonical]
