-- Model `last`: the gender of the client's event with the greatest (ts, entry id).
-- Runs on the batch frame of _frame.lua (KEYS/ARGV layout, exactly-once, wrong-type guard,
-- erasure markers, expiry).
--
-- per client (one key): KEYS[k] = result hash   <prefix>:{sN}:r:<cid>
-- no parameters
-- result fields: last, last:ts, last:id, last:at
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
  read = function(k)
    local have = read_hash('HMGET', KEYS[k], ts_field, id_field, EXPIRES)
    if have == nil then return false end
    return have, have[3]
  end,
  apply = function(k, have, acked, m, expiry)
    local best = nil
    for j = 1, m do
      local i = acked[j]
      if best == nil or later(ARGV[i + 2], ARGV[i], ARGV[best + 2], ARGV[best]) then best = i end
    end
    if have[1] and not later(ARGV[best + 2], ARGV[best], have[1], have[2]) then
      return true, false
    end
    if expiry then
      redis.call('HSET', KEYS[k], group, ARGV[best + 1], ts_field, ARGV[best + 2],
        id_field, ARGV[best], at_field, now, EXPIRES, expiry)
    else
      redis.call('HSET', KEYS[k], group, ARGV[best + 1], ts_field, ARGV[best + 2],
        id_field, ARGV[best], at_field, now)
    end
    return true, true
  end,
})
