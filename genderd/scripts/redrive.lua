-- Re-drive one dead-lettered entry into the stream of its client's shard, at most once:
-- a marker for the original entry (its shard and id) is set first, and the event is added
-- only when the marker was not there. Re-running an interrupted re-drive (the dead letter
-- not yet deleted) therefore adds nothing twice. The marker expires with the retention.
--
-- KEYS[1] = the target shard's stream   <prefix>:{sM}:events
-- KEYS[2] = the marker                  <prefix>:{sM}:redriven:<source shard>:<entry id>
-- ARGV[1] = marker lifetime (ms);  ARGV[2..] = the event's field/value pairs
-- returns: the new entry id, or false when the entry was re-driven before

local stream, marker = KEYS[1], KEYS[2]
local ttl = ARGV[1]

if not redis.call('SET', marker, '1', 'NX', 'PX', ttl) then
  return false
end
local fields = {}
for i = 2, #ARGV do fields[#fields + 1] = ARGV[i] end
return redis.call('XADD', stream, '*', unpack(fields))
