"""Which server a process talks to: the configured URL, else the server `genderd up` runs here.

The edges resolve it once (the CLI's commands, the API's app factory, `genderd up`) and pass
settings completed with the URL down; the transport only connects to the URL it is given.
"""

from __future__ import annotations

from pathlib import Path

from genderd import runstate
from genderd.settings import Settings
from genderd.transport.unavailable import NoServerError


def resolve_url(settings: Settings) -> str:
    """The Redis URL: ``GENDERD_REDIS_URL``, else the server `genderd up` runs here.

    Raises:
        NoServerError: neither is there (a configuration error).
    """
    if settings.redis_url:
        return settings.redis_url
    state = runstate.read_state(Path(settings.state_dir))
    if state is not None:
        return state.url
    raise NoServerError(
        f"no Redis to talk to: set GENDERD_REDIS_URL, or run `genderd up` in this directory "
        f"(no running server recorded under {settings.state_dir}/)"
    )


def resolved(settings: Settings) -> Settings:
    """``settings`` with ``redis_url`` set to :func:`resolve_url`'s answer."""
    if settings.redis_url:
        return settings
    return settings.model_copy(update={"redis_url": resolve_url(settings)})
