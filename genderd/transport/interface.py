"""The transport interface: how every genderd process sends commands and scripts to Redis.

Two implementations (:mod:`~genderd.transport.pool`: redis-py's pool, standalone or Cluster;
:mod:`~genderd.transport.pipelined`: one pipelined hiredis connection) only move bytes. What
callers rely on is written here once, for both:

- scripts run by SHA; a server that lost its script cache (restart, ``SCRIPT FLUSH``) gets the
  script loaded and the command sent again, once;
- replies have one shape: a hash is a dict (HGETALL, and scripts whose :class:`Script` says so);
- a server that cannot serve the request now raises a
  :class:`~genderd.transport.unavailable.RedisUnavailableError` subclass, never a bare
  ``ResponseError``;
- a script's error names the file and line it comes from (``top.lua:42``, not the server's
  ``user_script:310``: :meth:`Script.locate <genderd.lua.Script.locate>`).
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from genderd.lua import Script
from genderd.transport.unavailable import is_no_script, translate

Command = tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class ScriptCall:
    """One call of a script: its keys and arguments."""

    script: Script
    keys: Sequence[Any]
    args: Sequence[Any]

    def command(self) -> Command:
        return ("EVALSHA", self.script.sha, len(self.keys), *self.keys, *self.args)


def _raise(error: BaseException, script: Script | None = None) -> NoReturn:
    """Raise ``error``, or its genderd error (``from`` it) when it is a "not now" state;
    located in ``script`` when it is a call of it."""
    state = translate(error if script is None else script.locate(error))
    if state is error:
        raise error
    raise state from error


def _shape(call: Command | ScriptCall, reply: Any) -> Any:
    if isinstance(call, ScriptCall) and call.script.reply is not None:
        return call.script.reply(reply)
    return reply


class Transport(abc.ABC):
    """Sends commands and scripts to one Redis deployment (see the module docstring)."""

    #: "pool" or "pipelined": shown in logs and /readyz
    kind: str

    # -- what implementations provide: I/O only ------------------------------------------------
    @abc.abstractmethod
    async def _send(self, command: Command) -> Any:
        """Send one command and return its reply; raise redis-py's errors."""

    @abc.abstractmethod
    async def _send_many(self, commands: Sequence[Command]) -> list[Any]:
        """Send commands in one round trip (on Cluster: concurrently); return each reply or
        the exception it answered, in order."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Close the connections; the transport reconnects if used again."""

    # -- what callers use ----------------------------------------------------------------------
    async def execute(self, *args: Any) -> Any:
        """One command's reply."""
        try:
            return await self._send(args)
        except Exception as error:
            _raise(error)

    async def call(self, script: Script, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """Run ``script``; load it first when the server does not have it."""
        return await self._call(ScriptCall(script, keys, args))

    async def _call(self, call: ScriptCall) -> Any:
        command = call.command()
        try:
            try:
                reply = await self._send(command)
            except Exception as error:
                if not is_no_script(error):
                    raise
                await self._script_load(call.script)
                reply = await self._send(command)
        except Exception as error:
            _raise(error, call.script)
        parse = call.script.reply
        return reply if parse is None else parse(reply)

    async def execute_many(self, calls: Sequence[Command | ScriptCall]) -> list[Any]:
        """Replies of ``calls`` (commands and script calls) sent in one round trip.

        Script calls the server could not run for want of the script are sent again after
        loading it (only those: the others ran). The first error reply is raised after every
        reply is in.
        """
        if len(calls) == 1:
            only = calls[0]
            if isinstance(only, ScriptCall):
                return [await self._call(only)]
            return [await self.execute(*only)]
        commands = [c.command() if isinstance(c, ScriptCall) else c for c in calls]
        try:
            replies = await self._send_many(commands)
            missing = [
                i
                for i, reply in enumerate(replies)
                if isinstance(reply, Exception) and is_no_script(reply)
            ]
            if missing:
                scripts = {c.script for i in missing if isinstance(c := calls[i], ScriptCall)}
                await self._load(scripts)
                again = await self._send_many([commands[i] for i in missing])
                for i, reply in zip(missing, again, strict=True):
                    replies[i] = reply
        except Exception as error:
            _raise(error)
        for call, reply in zip(calls, replies, strict=True):
            if isinstance(reply, Exception):
                _raise(reply, call.script if isinstance(call, ScriptCall) else None)
        return [_shape(call, reply) for call, reply in zip(calls, replies, strict=True)]

    async def _script_load(self, script: Script) -> None:
        """Load ``script`` where its calls will run (every primary, on Cluster)."""
        await self._send(("SCRIPT", "LOAD", script.source))

    async def _load(self, scripts: Iterable[Script]) -> None:
        for script in scripts:
            await self._script_load(script)

    async def load(self, scripts: Iterable[Script]) -> None:
        """Make sure the server has ``scripts`` (readiness checks call this)."""
        try:
            await self._load(scripts)
        except Exception as error:
            _raise(error)

    async def ping(self) -> None:
        """Raise unless the server answers on this transport's connection."""
        await self.execute("PING")
