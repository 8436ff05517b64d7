-- Model `first` (the Lua-backed plug-in of docs/lua-models.md): the gender of the client's
-- event with the least (ts, entry id). Runs on the batch frame of _frame.lua.
--
-- per client (one key): KEYS[k] = result hash   <prefix>:{sN}:r:<cid>
-- no parameters
-- result fields: first, first:ts, first:id, first:at
-- uses: _basics.lua _expiry.lua _frame.lua

-- (ts, id) of a is less than that of b
local function earlier(ts_a, id_a, ts_b, id_b)
  if ts_a ~= ts_b then return greater(ts_b, ts_a) end
  return id_after(id_b, id_a)
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
      if best == nil or earlier(ARGV[i + 2], ARGV[i], ARGV[best + 2], ARGV[best]) then
        best = i
      end
    end
    if have[1] and not earlier(ARGV[best + 2], ARGV[best], have[1], have[2]) then
      return true, false  -- an earlier event is already the answer
    end
    redis.call('HSET', KEYS[k], unpack(with_expiry({group, ARGV[best + 1], ts_field,
      ARGV[best + 2], id_field, ARGV[best], at_field, now}, expiry)))
    return true, expiry ~= nil
  end,
})
