"""Discovery of models through the ``genderd.models`` entry-point group."""

from __future__ import annotations

from collections.abc import Iterator
from importlib.metadata import entry_points

from genderd.keys import Keys
from genderd.models.base import Model
from genderd.settings import Settings

ENTRY_POINT_GROUP = "genderd.models"


class UnknownModelError(KeyError):
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


def discover() -> list[type[Model]]:
    """Every model class registered under the entry-point group, sorted by name."""
    classes: dict[str, type[Model]] = {}
    for point in entry_points(group=ENTRY_POINT_GROUP):
        cls = point.load()
        if not (isinstance(cls, type) and issubclass(cls, Model)):
            raise TypeError(f"entry point {point.name!r} is not a genderd Model subclass")
        classes[cls.name] = cls
    return [classes[name] for name in sorted(classes)]


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
        return cls([model_cls(settings, keys) for model_cls in discover()])

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
