"""Run a model over a list of events and get its answers, for a model's unit tests in plain
pytest, with no Redis server to start by hand (SPEC §7)::

    from genderd.testing import run_model

    def test_parity():
        answers = run_model(Parity, [{"cid": "C1", "gender": "male"}] * 2)
        assert answers["C1"].gender == "female"

A :class:`~genderd.models.PythonModel` runs in-process by default (``redis=False``): the
framework's own code calls ``identify_gender`` in the order the events are given. Any model
(Lua-backed ones, and Python ones with ``redis=True``) runs through the real pipeline on a
throw-away server started from the bundled binary on a free loopback port: the events are
written to the shard streams, one worker drains them and the answers are read as the API reads
them.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import redis as redis_py

from genderd import deadletters, errors
from genderd.bundled import BundledServer, find_binary, free_port
from genderd.clock import wall_clock_ms
from genderd.deployment import Deployment, keys_of
from genderd.events import Event, by_client, parse_entry
from genderd.models.base import Answer
from genderd.models.python import PythonModel, PythonRuntime
from genderd.models.registry import ModelClass, Registration, Registry
from genderd.producer import Producer
from genderd.reader import Reader
from genderd.settings import Settings
from genderd.transport import Links, connect
from genderd.worker import Worker

EventLike = Mapping[str, Any] | Event


class ModelFailure(errors.ModelError, AssertionError):
    """Events the model failed on (``model_error``), when ``strict``."""


def run_model(
    model: ModelClass,
    events: Iterable[EventLike],
    *,
    now_ms: int | None = None,
    read_at_ms: int | None = None,
    redis: bool | None = None,
    strict: bool = True,
    **settings: Any,
) -> dict[str, Answer | None]:
    """The answers of ``model`` for every client of ``events`` after applying them.

    ``model``: the model's class, as registered (a ``PythonModel``, ``TopWindow`` or
    ``Model`` subclass). ``events``: dicts with ``cid``, ``gender`` and optionally ``ts``
    (ms; default ``now_ms``), or :class:`~genderd.events.Event` objects. ``now_ms``: the
    processing clock (default: the wall clock). ``read_at_ms``: when the answers are read
    (default ``now_ms``; windowed answers are right at that time). ``redis``: run through a
    throw-away server (default: only for models that are not Python models). ``strict``:
    raise :class:`ModelFailure` when the model failed on an event (else such events are left
    out, as the dead letters would be).
    ``settings``: any :class:`~genderd.settings.Settings` field (``genders="female,male,kids"``).
    """
    now = wall_clock_ms() if now_ms is None else now_ms
    configured = Settings(**{"redis_url": "redis://unused.invalid", **settings})
    normalised = [_event(e, now, configured, n) for n, e in enumerate(events)]
    if redis is None:
        redis = not issubclass(model, PythonModel)
    if not redis:
        if not issubclass(model, PythonModel):
            raise TypeError(f"{model.__name__} is not a PythonModel: it needs redis=True")
        runtime = PythonRuntime(model, configured, keys_of(configured))
        return _in_process(runtime, normalised, now, strict)
    registered = Registration.of(model, model.__name__)
    return asyncio.run(
        _through_redis(registered, normalised, configured, now, read_at_ms or now, strict)
    )


def _event(given: EventLike, now: int, settings: Settings, n: int) -> Event:
    if isinstance(given, Event):
        return given
    fields = {k: str(v) for k, v in given.items()}
    fields.setdefault("ts", str(now))
    # an id in the order given, its ms part the event's ts (what a producer writing it would
    # get when writing in time order)
    entry_id = f"{fields['ts']}-{n}"
    pairs = [(k.encode(), v.encode()) for k, v in fields.items()]
    parsed = parse_entry(entry_id, pairs, settings.genders, now, 10**15)
    if not isinstance(parsed, Event):
        raise ValueError(f"event {n} ({dict(given)}): {parsed.reason.value}: {parsed.detail}")
    return parsed


def _in_process(
    model: PythonRuntime, events: list[Event], now: int, strict: bool
) -> dict[str, Answer | None]:
    """The worker's own adapter (:class:`PythonRuntime`) over each client's events, its
    result-hash fields read back as lookups read them."""
    answers: dict[str, Answer | None] = {}
    failures = []
    for cid, own in by_client(events).items():
        done = model.run(None, own)
        failures += done.failed
        fields, _ = model.answer_fields_of(done, None, now) if done.applied else ([], [])
        stored = {fields[i].encode(): fields[i + 1].encode() for i in range(0, len(fields), 2)}
        answers[cid] = model.answer(stored)
    if strict and failures:
        raise ModelFailure("; ".join(f"{e.cid} {e.id}: {detail}" for e, detail in failures))
    return answers


async def _through_redis(
    registered: Registration,
    events: list[Event],
    configured: Settings,
    now: int,
    read_at: int,
    strict: bool,
) -> dict[str, Answer | None]:
    with (
        tempfile.TemporaryDirectory(prefix="genderd-testing-") as data,
        BundledServer(find_binary(), free_port(), Path(data), persistent=False) as server,
    ):
        settings = configured.model_copy(update={"redis_url": server.url})
        keys = keys_of(settings)
        model = registered.build(settings, keys)
        clock = _Clock(now)
        deployment = Deployment(settings, keys, Registry([model]), clock)
        with _client(server.url) as client, Producer(client, deployment) as producer:
            for event in events:
                producer.send_fields({"cid": event.cid, "gender": event.gender, "ts": event.ts})
        links = connect(settings)
        try:
            worker = Worker(deployment, links, model, consumer="genderd.testing")
            await worker.ensure_groups()
            outcome = await worker.drain()
            if strict and outcome.dead:
                raise ModelFailure(await _dead_lettered(links, deployment))
            clock.now_ms = read_at
            reader = Reader(deployment, links.fast)
            cids = list(dict.fromkeys(e.cid for e in events))
            found = await reader.lookup_many(cids, [model])
        finally:
            await links.close()
    return {cid: answers[model.name] for cid, answers in zip(cids, found, strict=True)}


async def _dead_lettered(links: Links, deployment: Deployment) -> str:
    """Each dead-lettered event as the in-process run names a failure: ``<cid> <id>: <detail>``
    (the id is the entry's stream id; the reason is added when it is not ``model_error``)."""
    named = []
    async for letter in deadletters.scan(links.client, deployment):
        cid = letter.event_fields().get("cid", "?")
        why = (
            letter.detail if letter.reason == "model_error" else f"{letter.reason}: {letter.detail}"
        )
        named.append(f"{cid} {letter.entry_id}: {why}")
    return "; ".join(named) or "events were dead-lettered"


def _client(url: str) -> redis_py.Redis:
    return redis_py.Redis.from_url(url)


class _Clock:
    def __init__(self, now_ms: int) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms


__all__ = ["ModelFailure", "run_model"]
