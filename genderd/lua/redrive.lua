-- Re-drive one dead-lettered entry into the stream of its client's shard, at most once:
-- a marker for the original entry (its shard and id) is set first, and the event is added
-- only when the marker was not there. Re-running an interrupted re-drive (the dead letter
-- not yet deleted) therefore adds nothing twice. The marker expires with the retention.
--
-- Erasure (_erasure.lua, genderd/erasure/): an entry of a client erased after it was
-- written is not written again: it would bring the client back. Stream ids are ordered only
-- within one stream, so:
--   * an entry of the target shard's own stream (ARGV[3] = "") is compared here with the
--     client's marker, an id of that same stream;
--   * an entry of another shard's stream (wrong_shard) was compared by the caller with the
--     client's marker in that shard (same stream, its ids) and found to be written after
--     the erasure, if any. The caller read the target shard's marker (KEYS[3]) before that
--     check and passes what it saw in ARGV[3] ("none": no marker). An erasure marks the
--     other shards before the client's own, so if the target marker is still what the caller
--     saw, no erasure began after the caller's check; an erasure that marks this shard later
--     covers the entry written now (its id is before the new marker). If the marker changed,
--     nothing is written and the caller checks again.
--
-- KEYS[1] = the target shard's stream   <prefix>:{sM}:events
-- KEYS[2] = the marker                  <prefix>:{sM}:redriven:<source shard>:<entry id>
-- KEYS[3] = the client's erasure marker  <prefix>:{sM}:erased:<digest>
-- ARGV[1] = marker lifetime (ms);  ARGV[2] = the original entry's id
-- ARGV[3] = "" (the entry is of this shard's stream), or the client's erasure marker here as
--           the caller read it ("none" for no marker)
-- ARGV[4..] = the event's field/value pairs
-- returns: the new entry id, false when the entry was re-driven before, "erased" when its
-- client was erased after it was written, "changed" when the marker is no longer what the
-- caller saw (check again)
-- uses: _basics.lua

local stream, marker = KEYS[1], KEYS[2]
local ttl, id, seen = ARGV[1], ARGV[2], ARGV[3]

local cutoff = redis.call('GET', KEYS[3])
if seen == '' then
  if cutoff and not id_after(id, cutoff) then
    return 'erased'
  end
elseif (cutoff or 'none') ~= seen then
  return 'changed'
end
if not redis.call('SET', marker, '1', 'NX', 'PX', ttl) then
  return false
end
local fields = {}
for i = 4, #ARGV do fields[#fields + 1] = ARGV[i] end
return redis.call('XADD', stream, '*', unpack(fields))
