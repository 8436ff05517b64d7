"""Models: each turns a client's events into an answer (see ``base.Model``).

Write a new one as a :class:`PythonModel` (plain Python) or, for a new window length of the
windowed top, a :class:`TopWindow` subclass (SPEC §7).
"""

from genderd.models.base import Answer, Model
from genderd.models.python import PythonModel
from genderd.models.registry import PluginError, Registry, UnknownModelError
from genderd.models.window import TopWindow

__all__ = [
    "Answer",
    "Model",
    "PluginError",
    "PythonModel",
    "Registry",
    "TopWindow",
    "UnknownModelError",
]
