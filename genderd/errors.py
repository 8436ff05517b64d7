"""Everything genderd raises on purpose: one base, :class:`GenderdError`, and four families.

Each edge maps the families once: the command line (:mod:`genderd.cli.common`) prints one line
and exits 2 for :class:`ConfigurationError` and :class:`InputError` (like a usage error), 1 for
the others; the API (:mod:`genderd.api.app`) answers 503 with ``Retry-After`` for
:class:`UnavailableError` and 4xx for :class:`InputError`; a worker logs an
:class:`UnavailableError` and backs off. The classes that say more live beside the code that
raises them (``transport.unavailable``, ``events``, ``models.registry``, ...) and derive from a
family here, keeping the builtin base their callers catch (``EventError`` is a ``ValueError``,
``UnknownModelError`` a ``KeyError``).
"""

from __future__ import annotations


class GenderdError(Exception):
    """Something genderd refuses or cannot do, said in one line for users."""


class ConfigurationError(GenderdError):
    """The installation is set up wrong: bad settings, a model that cannot be loaded, no
    server to talk to, a data layout this release must not write. Nothing was touched."""


class InputError(GenderdError):
    """What a caller passed is wrong: an event, a client id, a model name, a file's line."""


class UnavailableError(GenderdError):
    """Redis cannot serve this request now; the request is fine and will work later."""

    state = "unavailable"  # what the server is, in words ("loading", "out of memory", ...)


class ModelError(GenderdError):
    """A model failed on an event (its code raised, or its answer is not a configured gender)."""


__all__ = ["ConfigurationError", "GenderdError", "InputError", "ModelError", "UnavailableError"]
