-- Model `last`: the gender of the client's event with the greatest (ts, entry id).
-- Runs on the batch frame of _frame.lua (KEYS/ARGV layout, exactly-once, wrong-type guard,
-- erasure markers, expiry).
--
-- per client (one key): KEYS[k] = result hash   <prefix>:{sN}:r:<cid>
-- no parameters
-- result fields: last, last:ts, last:id, last:at
-- grades: the answer before an entry is the gender of the greatest (ts, id) applied so far
-- uses: _basics.lua _expiry.lua _frame.lua

-- (ts, id) of a is greater than that of b
local function later(ts_a, id_a, ts_b, id_b)
  if ts_a ~= ts_b then return greater(ts_a, ts_b) end
  return id_after(id_a, id_b)
end

local group, now = ARGV[1], ARGV[2]
local ts_field, id_field, at_field = group .. ':ts', group .. ':id', group .. ':at'

return apply_batch({
  nkeys = 1,
  nparams = 0,
  grades = true,
  read = function(k)
    local have = read_hash('HMGET', KEYS[k], ts_field, id_field, EXPIRES, group)
    if have == nil then return false end
    return have, have[3]
  end,
  apply = function(k, have, acked, m, expiry, predictions, each)
    -- the greatest (ts, id) so far and its gender: the stored one, then the entries' in turn;
    -- the answer before each entry is graded here (the frame's counts)
    local top_ts, top_id, answer = have[1], have[2], have[4]
    local predicted, correct = 0, 0
    for j = 1, m do
      local i = acked[j]
      if each then predictions[j] = answer end
      if predictions and answer then
        predicted = predicted + 1
        if answer == ARGV[i + 1] then correct = correct + 1 end
      end
      if not top_ts or later(ARGV[i + 2], ARGV[i], top_ts, top_id) then
        top_ts, top_id, answer = ARGV[i + 2], ARGV[i], ARGV[i + 1]
      end
    end
    if top_id == have[2] and top_ts == have[1] then  -- none is later
      return true, false, predicted, correct
    end
    if expiry then
      redis.call('HSET', KEYS[k], group, answer, ts_field, top_ts, id_field, top_id,
        at_field, now, EXPIRES, expiry)
    else
      redis.call('HSET', KEYS[k], group, answer, ts_field, top_ts, id_field, top_id,
        at_field, now)
    end
    return true, true, predicted, correct
  end,
})
