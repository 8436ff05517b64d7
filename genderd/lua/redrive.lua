-- Re-drive one dead-lettered entry into the stream of its client's shard, at most once:
-- a marker for the original entry (its shard and id) is set first, and the event is added
-- only when the marker was not there. Re-running an interrupted re-drive (the dead letter
-- not yet deleted) therefore adds nothing twice. The marker expires with the retention.
-- An entry of a client erased after it was written (_erasure.lua: its id is not
-- after the client's erasure marker) is not written again: it would bring the client back.
--
-- KEYS[1] = the target shard's stream   <prefix>:{sM}:events
-- KEYS[2] = the marker                  <prefix>:{sM}:redriven:<source shard>:<entry id>
-- KEYS[3] = the client's erasure marker  <prefix>:{sM}:erased:<digest>
-- ARGV[1] = marker lifetime (ms);  ARGV[2] = the original entry's id
-- ARGV[3..] = the event's field/value pairs
-- returns: the new entry id, false when the entry was re-driven before, "erased" when its
-- client was erased after it was written
-- uses: _basics.lua

local stream, marker = KEYS[1], KEYS[2]
local ttl, id = ARGV[1], ARGV[2]

local cutoff = redis.call('GET', KEYS[3])
if cutoff and not id_after(id, cutoff) then
  return 'erased'
end
if not redis.call('SET', marker, '1', 'NX', 'PX', ttl) then
  return false
end
local fields = {}
for i = 3, #ARGV do fields[#fields + 1] = ARGV[i] end
return redis.call('XADD', stream, '*', unpack(fields))
