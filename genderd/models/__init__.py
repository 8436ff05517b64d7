"""Models: each turns a client's events into an answer (see ``base.Model``)."""

from genderd.models.base import Answer, Model
from genderd.models.registry import Registry, UnknownModelError

__all__ = ["Answer", "Model", "Registry", "UnknownModelError"]
