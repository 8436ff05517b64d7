-- Model `last`: the gender of the client's event with the greatest (ts, entry id).
-- Applies a batch of one shard's entries; each entry's effect and its XACK happen here
-- together, and an entry whose XACK returns 0 (already acknowledged) changes nothing.
--
-- KEYS[1] = shard stream          <prefix>:{sN}:events
-- KEYS[2] = shard stats hash      <prefix>:{sN}:stats
-- KEYS[2+i] = client result hash  <prefix>:{sN}:r:<cid>      (one per entry i)
-- ARGV[1] = consumer group (the model name);  ARGV[2] = processing time "now" (ms)
-- ARGV[3..] = per entry: id, gender, ts
-- returns: {number of entries applied, ids of entries skipped because a key has a wrong type...}
-- result fields: last, last:ts, last:id, last:at

local stream, stats = KEYS[1], KEYS[2]
local group, now = ARGV[1], ARGV[2]

-- a > b for non-negative decimal integers without leading zeros, of any length
local function greater(a, b)
  if #a ~= #b then return #a > #b end
  return a > b
end

-- (ts, id) of a is greater than that of b; ids are "<ms>-<seq>"
local function later(ts_a, id_a, ts_b, id_b)
  if ts_a ~= ts_b then return greater(ts_a, ts_b) end
  local ms_a, seq_a = string.match(id_a, '^(%d+)-(%d+)$')
  local ms_b, seq_b = string.match(id_b, '^(%d+)-(%d+)$')
  if ms_a ~= ms_b then return greater(ms_a, ms_b) end
  return greater(seq_a, seq_b)
end

local applied, skipped = 0, {}
for i = 1, (#ARGV - 2) / 3 do
  local id, gender, ts = ARGV[3 * i], ARGV[3 * i + 1], ARGV[3 * i + 2]
  if wrong_type(2 + i, 2 + i) then
    skipped[#skipped + 1] = id
  elseif redis.call('XACK', stream, group, id) == 1 then
    applied = applied + 1
    local result = KEYS[2 + i]
    local have = redis.call('HMGET', result, group .. ':ts', group .. ':id')
    if not have[1] or later(ts, id, have[1], have[2]) then
      store(result, group, {{'', gender}, {'ts', ts}, {'id', id}}, now)
    end
  end
end
if applied > 0 then redis.call('HINCRBY', stats, group .. ':applied', applied) end
return {applied, unpack(skipped)}
