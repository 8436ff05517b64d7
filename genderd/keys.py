"""Every Redis key genderd uses, and the functions that build them. Nowhere else names a key.

All per-shard keys carry the shard's hash tag ``{s<N>}`` so that a Lua script touching the
stream, a client's state and its result hash works unchanged on Redis Cluster. The client id
always comes last in a key because it may itself contain ``:``.
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass


def glob_escape(text: str) -> str:
    """``text`` with SCAN/KEYS glob characters escaped, to match itself only."""
    return "".join(f"\\{char}" if char in "*?[]\\" else char for char in text)


def digest(cid: str) -> str:
    """The id under which an erased client's marker is kept (SPEC §9: never the id itself):
    the first 128 bits of SHA-256 of ``utf8(cid)``, in hex. Logs of erasures name it too."""
    return hashlib.sha256(cid.encode("utf-8")).hexdigest()[:32]


def scrub_digest(cid: str) -> str:
    """The id under which an erased client waits for the scrub of its stream entries (SPEC §9:
    never the id itself): SHA-1 of ``utf8(cid)``, in hex, the digest a script can compute
    (``redis.sha1hex``) to match each entry's ``cid`` against the pending erasures."""
    return hashlib.sha1(cid.encode("utf-8"), usedforsecurity=False).hexdigest()


def shard_of(cid: str, shards: int) -> int:
    """The shard of a client: ``crc32(utf8(cid)) mod shards`` (zlib's CRC-32)."""
    return zlib.crc32(cid.encode("utf-8")) % shards


#: the per-model counters of a shard's stats hash (:meth:`Keys.stats`)
STATS_COUNTERS = ("applied", "dead", "erased")


@dataclass(frozen=True)
class Keys:
    """Key builder bound to one deployment prefix."""

    prefix: str = "genderd"

    # -- deployment-wide -------------------------------------------------------------------
    @property
    def meta(self) -> str:
        """Hash of deployment facts fixed at first start (``shards``, ``created_ms``)."""
        return f"{self.prefix}:meta"

    @property
    def models(self) -> str:
        """Hash of the models the deployment runs, one JSON record per model name, written
        by each model's workers as they start (see :mod:`genderd.catalog`)."""
        return f"{self.prefix}:models"

    # -- the champion of live grading (genderd.grading.champion, SPEC §14) -------------------
    # (one hash tag: the script that changes the champion writes the hash and the history)
    @property
    def champion(self) -> str:
        """Hash: the champion (``model``, ``since_ms``, ``pinned``, ``evidence`` JSON) and the
        latest check's verdict (``checked_ms``, ``check`` JSON, ``behind``: the model a
        pinned champion is significantly behind, if any)."""
        return f"{self.prefix}:{{champion}}"

    @property
    def champion_history(self) -> str:
        """Stream of champion changes, each with its evidence (capped)."""
        return f"{self.prefix}:{{champion}}:history"

    @property
    def champion_lock(self) -> str:
        """String held (with a TTL) by the one process checking the champion now."""
        return f"{self.prefix}:{{champion}}:lock"

    # -- erasures (genderd/erasure/): their records and the scrubber's lease -------------------
    def erasure(self, erasure_id: str) -> str:
        """Hash: the record of one erasure (``created_ms``, ``clients``, ``digest`` for one
        client, ``keys``, ``marked_ms``, ``s<N>`` = ``<entries> <dead letters>`` once shard
        N's scrub is done, ``done_ms``); expires with its markers' lifetime."""
        return f"{self.prefix}:erasure:{erasure_id}"

    @property
    def erasure_ids(self) -> str:
        """Sorted set of the erasures' ids by creation time (ms), for ``erase --status``."""
        return f"{self.prefix}:erasure-ids"

    @property
    def scrubber(self) -> str:
        """The scrubber's lease: the name of the one process that steps the scrubs now
        (``SET NX PX``, kept while it works; see genderd/erasure/scrub.py)."""
        return f"{self.prefix}:scrubber"

    # -- per model: the pause of its workers during a replay (genderd.pause) -----------------
    def pause_tag(self, model: str) -> str:
        """Hash tag shared by a model's pause keys (one slot: a script touches them together)."""
        return f"{self.prefix}:{{pause:{model}}}"

    def pause(self, model: str) -> str:
        """String holding the token of the replay that pauses the model's workers; it expires
        unless that replay keeps refreshing it, so a crashed replay releases it by itself."""
        return self.pause_tag(model)

    def rebuilding(self, model: str) -> str:
        """Marker (no expiry) that a replay is deleting the model's groups and state: from
        just before the wipe until the groups are back. Left by a replay that died in between,
        it keeps the model's workers paused until a replay runs to its end."""
        return f"{self.pause_tag(model)}:rebuilding"

    def workers(self, model: str) -> str:
        """Hash of the model's workers: consumer name -> ``<wall ms> running`` or
        ``<wall ms> paused <token>``, written by each worker about once a second (its
        heartbeat, and its acknowledgement of a pause)."""
        return f"{self.pause_tag(model)}:workers"

    # -- per shard ---------------------------------------------------------------------------
    def tag(self, shard: int) -> str:
        return f"{self.prefix}:{{s{shard}}}"

    def stream(self, shard: int) -> str:
        """The shard's event stream; every model has a consumer group on it."""
        return f"{self.tag(shard)}:events"

    def dead(self, shard: int) -> str:
        """The shard's dead-letter stream."""
        return f"{self.tag(shard)}:dead"

    def health(self, model: str, minute: int) -> str:
        """Hash of one model's events and ``model_error`` failures in one minute (minutes since
        the epoch), all workers together: ``events``, ``model_errors`` (see
        :mod:`genderd.health`). Not a shard's: one per model and minute, expiring."""
        return f"{self.prefix}:health:{model}:{minute}"

    def stats(self, shard: int) -> str:
        """Hash of per-model counters for the shard: ``<model>:<counter>`` for each of
        :data:`STATS_COUNTERS`."""
        return f"{self.tag(shard)}:stats"

    def grades(self, shard: int, model: str, hour: int) -> str:
        """Hash of one model's live grades in one shard and hour (hours since the epoch of the
        events' ts): per client group, ``"<events> <predicted> <correct>"`` (``_grades.lua``);
        expires after the longest grading window."""
        return f"{self.tag(shard)}:grades:{model}:{hour}"

    def redriven_ids(self, shard: int, model: str) -> str:
        """Set of entry ids re-driven to one model (``genderd dead redrive --model``): its
        workers apply them when they reclaim them, and do not grade them."""
        return f"{self.tag(shard)}:redriven-ids:{model}"

    def replicated(self, shard: int) -> str:
        """String: when (ms) an ingest last asked the shard's master to confirm its writes
        reached replicas (``GENDERD_INGEST_REPLICAS``). Written next to ``WAIT``, on the
        connection ``WAIT`` is sent on, so that ``WAIT`` covers the request's writes made on
        other connections (see :mod:`genderd.replication`)."""
        return f"{self.tag(shard)}:replicated"

    def redriven(self, shard: int, source_shard: int, entry_id: str) -> str:
        """Marker that the dead-lettered entry ``entry_id`` of ``source_shard``'s stream was
        re-driven into this shard's stream (so that a re-run adds it no second time)."""
        return f"{self.tag(shard)}:redriven:{source_shard}:{entry_id}"

    def erasures(self, shard: int) -> str:
        """Sentinel that exists while an erasure marker of the shard may exist, holding the
        greatest marker id (no expiry while the shard's scrub has clients to go, then it
        outlives the newest marker): the apply scripts look markers up only while it does."""
        return f"{self.tag(shard)}:erasures"

    def erased(self, shard: int, client_digest: str) -> str:
        """Erasure marker of a client (by :func:`digest`): the last id of the shard stream
        when the client was erased; its entries up to that id are never applied. No expiry
        until the shard's scrub has deleted them, then the retention plus a day."""
        return f"{self.tag(shard)}:erased:{client_digest}"

    # -- erasure across shards, and a stream set aside (genderd/erasure/, genderd/aside.py) --
    def stream_aside(self, shard: int) -> str:
        """The shard's event stream as ``genderd stream set-aside`` left it (a stream whose
        last id was in the future), kept for the retention; erasure still scans it."""
        return f"{self.tag(shard)}:events:aside"

    def scrub(self, shard: int) -> str:
        """Hash: the state of the shard's scrub (genderd/erasure/scrub.py): ``pass`` (its
        number), ``phase`` (``events``, ``aside``, ``dead``, ``tidy``; empty between passes),
        ``after`` (where the phase is), ``read`` (entries read in the pass), ``upto:events``
        and ``upto:dead`` (how far a pass reads), and ``<erasure id>:entries`` /
        ``<erasure id>:dead_letters`` (what a pending erasure's scrub deleted so far)."""
        return f"{self.tag(shard)}:scrub"

    def scrub_clients(self, shard: int) -> str:
        """Hash of the clients whose entries the shard's scrub still deletes: scrub digest
        (:func:`scrub_digest`) -> ``<stream cutoff> <dead-letter cutoff> <pass> <erasure id>
        <digest>``."""
        return f"{self.tag(shard)}:scrub:clients"

    def scrub_erasures(self, shard: int) -> str:
        """Sorted set of the erasures pending in the shard's scrub: erasure id -> the number
        of the pass that completes it."""
        return f"{self.tag(shard)}:scrub:erasures"

    def erased_pattern(self, shard: int) -> str:
        """SCAN pattern matching every erasure marker of one shard."""
        return f"{glob_escape(self.tag(shard))}:erased:*"

    # -- per client -------------------------------------------------------------------------
    def result(self, shard: int, cid: str) -> str:
        """The client's result hash: every model's answer, read by lookups directly."""
        return f"{self.tag(shard)}:r:{cid}"

    def state(self, shard: int, model: str, cid: str) -> str:
        """A model's per-client state (e.g. the all-time counters of ``top``)."""
        return f"{self.tag(shard)}:m:{model}:{cid}"

    def day_bucket(self, shard: int, model: str, day: int, cid: str) -> str:
        """A model's per-client, per-UTC-day bucket (``top7d``)."""
        return f"{self.tag(shard)}:m:{model}:d{day}:{cid}"

    def day_buckets(self, shard: int, model: str, days: range, cid: str) -> list[str]:
        """:meth:`day_bucket` for several days."""
        head = f"{self.tag(shard)}:m:{model}:d"
        return [f"{head}{day}:{cid}" for day in days]

    def model_pattern(self, shard: int, model: str) -> str:
        """SCAN pattern matching every state key of one model in one shard (for replay)."""
        return f"{glob_escape(self.tag(shard))}:m:{glob_escape(model)}:*"

    def result_pattern(self, shard: int) -> str:
        """SCAN pattern matching every result hash of one shard."""
        return f"{glob_escape(self.tag(shard))}:r:*"

    # -- per ingest request with an idempotency key (genderd.ingest) ---------------------------
    def idempotency_record(self, shard: int, key_digest: str) -> str:
        """That the shard's part of the request with the idempotency key of digest
        ``key_digest`` (:func:`digest` of the key) is written; holds the digest of the
        request's body, expires on its own. On the key's home shard it is also the key's
        claim (see ``ingest.lua``)."""
        return f"{self.tag(shard)}:idem:{key_digest}"

    def idempotency_claim(self, key_digest: str) -> str:
        """The claim of an idempotency key on a standalone server (holds the digest of the
        body first written under it; see ``ingest.lua``): checked by every part's call in the
        same atomic step, so all parts go in one round trip. Not a shard's key: on Cluster the
        home shard's record is the claim instead."""
        return f"{self.prefix}:idem:{key_digest}"

    # -- per block of lines of a `produce --file` import (genderd.imports) -----------------------
    def lines_record(self, shard: int, block_digest: str) -> str:
        """Set of the ids of the lines of one block of an import whose events on the shard are
        written; named by a digest of the block's first line, expires on its own (see
        ``ingest_lines.lua``)."""
        return f"{self.tag(shard)}:lines:{block_digest}"


def result_field(model: str, part: str = "") -> str:
    """Field of a model's answer in the result hash: ``<model>`` (gender) or ``<model>:<part>``.

    Parts: ``s`` scores (JSON object), ``ts`` last event time, ``at`` as-of time,
    ``u`` valid-until time (windowed models only).
    """
    return f"{model}:{part}" if part else model
