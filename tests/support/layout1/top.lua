-- Model `top`: the gender with the most events of all time (ties: newest event, then name).
-- Applies a batch of one shard's entries; each entry's effect and its XACK happen here
-- together, and an entry whose XACK returns 0 (already acknowledged) changes nothing.
-- Each touched client's answer is recomputed once per call, from its counters.
--
-- KEYS[1] = shard stream              <prefix>:{sN}:events
-- KEYS[2] = shard stats hash          <prefix>:{sN}:stats
-- per entry i (two keys each, from KEYS[3]):
--   client result hash                <prefix>:{sN}:r:<cid>
--   client counters (HINCRBY)         <prefix>:{sN}:m:top:<cid>
-- ARGV[1] = consumer group (the model name);  ARGV[2] = processing time "now" (ms)
-- ARGV[3..] = per entry: id, gender, ts
-- returns: {number of entries applied, ids of entries skipped because a key has a wrong type...}
-- result fields: top, top:s (scores JSON), top:ts (newest event ts), top:at

local stream, stats = KEYS[1], KEYS[2]
local group, now = ARGV[1], ARGV[2]

local applied, touched, order, skipped = 0, {}, {}, {}
for i = 1, (#ARGV - 2) / 3 do
  local id, gender, ts = ARGV[3 * i], ARGV[3 * i + 1], tonumber(ARGV[3 * i + 2])
  if wrong_type(1 + 2 * i, 2 + 2 * i) then
    skipped[#skipped + 1] = id
  elseif redis.call('XACK', stream, group, id) == 1 then
    applied = applied + 1
    local result, counters = KEYS[1 + 2 * i], KEYS[2 + 2 * i]
    count_event(counters, gender, ts)
    if not touched[result] then
      touched[result] = counters
      order[#order + 1] = result
    end
  end
end
for _, result in ipairs(order) do
  local counts, newest = {}, {}
  add_counts(touched[result], counts, newest)
  local best, scores, latest = argmax(counts, newest)
  store(result, group, {{'', best or false}, {'s', scores or false}, {'ts', latest or false}}, now)
end
if applied > 0 then redis.call('HINCRBY', stats, group .. ':applied', applied) end
return {applied, unpack(skipped)}
