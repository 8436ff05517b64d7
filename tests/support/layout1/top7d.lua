-- Model `top7d`: the gender with the most events whose ts lies in the last W UTC days
-- (ties: newest event, then name). Events are counted in one hash per client per UTC day,
-- which gets a fixed EXPIREAT at the end of the last day it can still be inside a window.
-- An event already older than the window at processing time is acknowledged, not counted.
-- Each entry's effect and its XACK happen here together; an entry whose XACK returns 0
-- (already acknowledged) changes nothing. Touched answers are recomputed once per call.
--
-- KEYS[1] = shard stream              <prefix>:{sN}:events
-- KEYS[2] = shard stats hash          <prefix>:{sN}:stats
-- per entry i (W+3 keys each, from KEYS[3]):
--   client result hash                <prefix>:{sN}:r:<cid>
--   bucket of the event's UTC day     <prefix>:{sN}:m:top7d:d<day>:<cid>
--   buckets of days D-W+1 .. D+1      (D = today at "now"), same form
-- ARGV[1] = consumer group (the model name);  ARGV[2] = processing time "now" (ms)
-- ARGV[3] = window length W in days
-- ARGV[4..] = per entry: id, gender, ts
-- returns: {number of entries applied, ids of entries skipped because a key has a wrong type...}
-- result fields: top7d, top7d:s, top7d:ts, top7d:at, top7d:u (answer valid until, ms)

local stream, stats = KEYS[1], KEYS[2]
local group, now, window = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local per_entry = window + 3
local first_day = math.floor(now / MS_PER_DAY) - window + 1

local applied, touched, order, skipped = 0, {}, {}, {}
for i = 1, (#ARGV - 3) / 3 do
  local id, gender, ts = ARGV[3 * i + 1], ARGV[3 * i + 2], tonumber(ARGV[3 * i + 3])
  local base = 3 + (i - 1) * per_entry
  if wrong_type(base, base + per_entry - 1) then
    skipped[#skipped + 1] = id
  elseif redis.call('XACK', stream, group, id) == 1 then
    applied = applied + 1
    local day = math.floor(ts / MS_PER_DAY)
    if day >= first_day then
      local bucket = KEYS[base + 1]
      count_event(bucket, gender, ts)
      redis.call('EXPIREAT', bucket, fmt((day + window) * (MS_PER_DAY / 1000)))
      local result = KEYS[base]
      if not touched[result] then
        touched[result] = base + 2
        order[#order + 1] = result
      end
    end
  end
end
for _, result in ipairs(order) do
  store(result, group, window_parts(touched[result], window, now), ARGV[2])
end
if applied > 0 then redis.call('HINCRBY', stats, group .. ':applied', applied) end
return {applied, unpack(skipped)}
