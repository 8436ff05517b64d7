"""Erasing clients on request (SPEC §9): every key of their data, their entries in the shard
streams and their dead letters, wherever they are, with nothing brought back afterwards, at a
cost that does not grow with the history before ``DELETE`` answers.

An erasure is two steps:

1. **Mark and delete**, before the answer (:mod:`~genderd.erasure.marking`, ``erase.lua``,
   atomically per shard): in *every* shard, each client gets an erasure marker holding the
   last id of *that shard's* stream at that moment, and joins the shard's scrub; in the
   client's own shard, every key of its data is deleted in the same call
   (:meth:`Model.client_data_keys` of each model). From then on, every script that would
   apply, dead-letter or re-drive one of the client's entries written before the erasure
   acknowledges it and changes nothing (the batch frame in ``_frame.lua``,
   ``python_commit.lua``, ``deadletter.lua``, ``redrive.lua``): batches in hand, reclaims,
   stale batches and replay alike, whether or not the scrub has run. The marker is keyed by a
   digest of the id (:func:`genderd.keys.digest`), and holds no expiry until the scrub has
   deleted every entry it covers; then it expires after the retention plus a day. A few
   script calls per shard, whatever the streams hold. The erasure gets an id and a record
   (:mod:`~genderd.erasure.records`), which never holds a client id.
2. **Scrub**, in the background (:mod:`~genderd.erasure.scrub`, ``scrub_step.lua``): bounded
   steps over every shard's stream up to that shard's marker ids, the stream set aside there
   if any (``genderd stream set-aside``), and every shard's dead-letter stream, deleting the
   entries that name a pending client and were written before its erasure. One pass over each
   stream serves every erasure pending when it starts; a worker process (or ``genderd erase
   --wait``) steps it, one process at a time.

Why every shard, and why each stream against its own ids: a producer with the wrong shard
rule writes a client's entries to another shard's stream, where every model dead-letters them
(``wrong_shard``). Stream ids are ordered only within one stream, so the client's marker in
its own shard (an id of that stream) says nothing about an entry of another shard's stream.
Each shard holds its own marker for the client, in its own ids, so:

- an entry of the client in shard 3's stream, written before the erasure, is acknowledged and
  dropped by ``deadletter.lua`` there (the processor passes the marker of every entry's
  client, of this shard or not): no dead letter of it can appear after the mark;
- a dead letter in shard 3 was written before the mark, or is of an entry written after the
  erasure; the scrub deletes every dead letter of the client up to the dead-letter stream's
  last id at the mark, so none of the first kind is left;
- ``genderd dead redrive`` re-drives a dead letter of shard 3 into the client's shard 9 only
  when shard 3's marker says its entry was written after the erasure; it reads shard 9's
  marker first and ``redrive.lua`` writes only if that marker is unchanged, and an erasure
  marks the other shards before the client's own, so an erasure that runs meanwhile is
  either seen by the check or covers the written entry, which its scrub deletes (see
  :mod:`genderd.deadletters`).

The price: a client costs one marker per shard (about 100 bytes each, until its scrub is done
and for the retention plus a day after), and a scrub pass reads every shard's stream, not
only the client's (however many clients it serves).

Events that arrive after the erasure have ids after the markers': they are applied as usual.
Each erased client is logged once, by digest, with its keys; each erasure once more when its
scrub is done, with what it deleted: the operator's proof.
"""

from __future__ import annotations

from genderd.erasure.marking import ERASE, Erased, Erasure, erase
from genderd.erasure.records import DONE, MARKING, SCRUBBING, ErasureStatus, recent, status
from genderd.erasure.scrub import Scrubber, wait

__all__ = [
    "DONE",
    "ERASE",
    "MARKING",
    "SCRUBBING",
    "Erased",
    "Erasure",
    "ErasureStatus",
    "Scrubber",
    "erase",
    "recent",
    "status",
    "wait",
]
