-- Re-drive one model's dead letters of one shard to that model only, exactly once: each
-- chosen dead letter's original entry is made pending again in the model's consumer group
-- (XCLAIM ... FORCE: the group's pending list takes it back, as if delivered and never
-- acknowledged) and the dead letter is deleted, in this one atomic call. The model's workers
-- reclaim it (XAUTOCLAIM: its idle time is set past claim_idle_ms) and apply it with the
-- usual state change + XACK in one call, so it is applied once; the other models' groups are
-- not touched. A dead letter already gone (re-driven, purged or erased meanwhile) is skipped,
-- so a repeated or concurrent run re-drives nothing twice. An original entry no longer in the
-- stream (trimmed past the retention, or erased) cannot be re-driven: its dead letter stays,
-- and so does one of a shard where the model has no consumer group (never created there, or
-- deleted by a replay): the group its workers create reads the stream from the start anyway.
-- Erasure needs nothing here: the entry keeps its id, which the apply scripts compare with
-- the client's erasure marker (_erasure.lua).
--
-- KEYS[1] = shard stream          <prefix>:{sN}:events
-- KEYS[2] = dead-letter stream    <prefix>:{sN}:dead
-- KEYS[3] = shard stats hash      <prefix>:{sN}:stats
-- KEYS[4] = the model's re-driven entry ids  <prefix>:{sN}:redriven-ids:<model>: its workers
--           apply them when they reclaim them, and do not grade them (SPEC §14: the client's
--           later events are applied already); it expires ARGV[4] seconds after the last write
-- ARGV[1] = consumer group (the model name);  ARGV[2] = consumer that holds the entries
-- ARGV[3] = idle time given to them (ms; claim_idle_ms, so the next reclaim takes them)
-- ARGV[4] = how long the re-driven ids are kept (s)
-- ARGV[5..] = pairs: dead letter id, original entry id
-- returns: {entries re-driven, then per dead letter left: its id, why ("gone": no longer in
--           the stream; "missing": the dead letter itself is gone or not the model's;
--           "nogroup": the model has no consumer group on this shard)}
-- stats: <model>:dead goes down by the entries re-driven (it counts the model's dead letters)

local stream, dead, stats, redriven = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local group, consumer, idle, keep = ARGV[1], ARGV[2], ARGV[3], ARGV[4]

local function letter_of(dead_id, id)
  local rows = redis.call('XRANGE', dead, dead_id, dead_id)
  if #rows == 0 then return false end
  local fields, model, orig = rows[1][2], nil, nil
  for f = 1, #fields, 2 do
    if fields[f] == '_model' then model = fields[f + 1] end
    if fields[f] == '_id' then orig = fields[f + 1] end
  end
  return model == group and orig == id
end

local done, left = 0, {}
for a = 5, #ARGV, 2 do
  local dead_id, id = ARGV[a], ARGV[a + 1]
  if not letter_of(dead_id, id) then
    left[#left + 1] = dead_id
    left[#left + 1] = 'missing'
  elseif #redis.call('XRANGE', stream, id, id) == 0 then
    left[#left + 1] = dead_id
    left[#left + 1] = 'gone'
  else
    local claimed = redis.pcall('XCLAIM', stream, group, consumer, 0, id,
      'IDLE', idle, 'RETRYCOUNT', 0, 'FORCE', 'JUSTID')
    if type(claimed) == 'table' and claimed.err then
      if not string.find(claimed.err, 'NOGROUP', 1, true) then
        -- count what this call moved before the error, as it stays moved
        if done > 0 then
          redis.call('HINCRBY', stats, group .. ':dead', -done)
          redis.call('EXPIRE', redriven, keep)
        end
        return redis.error_reply(claimed.err)
      end
      left[#left + 1] = dead_id
      left[#left + 1] = 'nogroup'
    else
      redis.call('XDEL', dead, dead_id)
      redis.call('SADD', redriven, id)
      done = done + 1
    end
  end
end
if done > 0 then
  redis.call('HINCRBY', stats, group .. ':dead', -done)
  redis.call('EXPIRE', redriven, keep)
end
return {done, unpack(left)}
