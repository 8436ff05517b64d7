-- Model `first`: the gender of the client's first event (least ts, then entry id).
-- Runs on genderd's batch frame (_frame.lua: the KEYS/ARGV layout, exactly-once, the
-- wrong-type guard, erasure and expiry); this file gives only the per-client step.
--
-- per client (one key): KEYS[k] = result hash   <prefix>:{sN}:r:<cid>
-- no parameters
-- result fields: first (the answer), first:ts (the newest event's ts: served as
--   last_event_ts), first:at (when written: served as as_of), first:ft and first:fid (the
--   first event's ts and entry id)
-- grades (live grading, `grades = true`): the answer before each entry is the gender of the
--   earliest (ts, id) applied so far
-- uses: _basics.lua _expiry.lua _frame.lua

-- (ts, id) of a is less than that of b
local function earlier(ts_a, id_a, ts_b, id_b)
  if ts_a ~= ts_b then return greater(ts_b, ts_a) end
  return id_after(id_b, id_a)
end

local group, now = ARGV[1], ARGV[2]
local ts_field, at_field = group .. ':ts', group .. ':at'
local first_ts_field, first_id_field = group .. ':ft', group .. ':fid'

return apply_batch({
  nkeys = 1,
  nparams = 0,
  grades = true,
  read = function(k)
    local have = read_hash('HMGET', KEYS[k], first_ts_field, first_id_field, ts_field, EXPIRES,
      group)
    if have == nil then return false end -- a key of another type: nothing is written
    return have, have[4]
  end,
  apply = function(k, have, acked, m, expiry, predictions)
    local first, newest = nil, have[3]
    local first_ts, first_id, answer = have[1], have[2], have[5] -- the earliest so far
    for j = 1, m do
      local i = acked[j] -- ARGV[i], ARGV[i + 1], ARGV[i + 2]: the entry's id, gender, ts
      if predictions then predictions[j] = answer or false end -- the answer before it
      if not first_ts or earlier(ARGV[i + 2], ARGV[i], first_ts, first_id) then
        first_ts, first_id, answer = ARGV[i + 2], ARGV[i], ARGV[i + 1]
      end
      if first == nil or earlier(ARGV[i + 2], ARGV[i], ARGV[first + 2], ARGV[first]) then
        first = i
      end
      if not newest or greater(ARGV[i + 2], newest) then newest = ARGV[i + 2] end
    end
    local set
    if not have[1] or earlier(ARGV[first + 2], ARGV[first], have[1], have[2]) then
      set = {group, ARGV[first + 1], first_ts_field, ARGV[first + 2], first_id_field,
        ARGV[first], ts_field, newest, at_field, now}
    elseif newest ~= have[3] then
      set = {ts_field, newest, at_field, now}
    elseif not expiry then
      return true, false -- nothing changed: nothing written
    else
      set = {}
    end
    redis.call('HSET', KEYS[k], unpack(with_expiry(set, expiry)))
    return true, expiry ~= nil
  end,
})
