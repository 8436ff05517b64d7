-- Model `top`: the gender with the most events of all time (ties: newest event, then name).
-- Runs on the batch frame of _lib.lua (KEYS/ARGV layout, exactly-once, wrong-type guard,
-- erasure markers, expiry).
-- The counters live in the result hash itself (top:n:<g> events, top:t:<g> newest event ts),
-- read once and written once per client per call, with the answer.
--
-- per client (two keys, or one when ARGV[5] is "0"):
--   KEYS[k]   = result hash                          <prefix>:{sN}:r:<cid>
--   KEYS[k+1] = counters of data layout 1 (upgrades)  <prefix>:{sN}:m:top:<cid>
-- ARGV[5] = "1" when layout 1's counters may exist (the second key is passed), else "0"
-- ARGV[6] = G, the number of configured genders;  ARGV[7 .. 6+G] = their names, sorted
-- result fields: top, top:s (scores JSON), top:ts (newest event ts), top:at, top:n:<g>, top:t:<g>
--
-- Layout 1 (genderd before data layout 2) kept the counters in KEYS[k+1] as <g> / <g>:t fields.
-- A client answered under it (top set, no counters in the result hash) has them moved into the
-- result hash by the first call that touches it; the old key is deleted then.

local group, now = ARGV[1], ARGV[2]
local layout1 = ARGV[5] == '1'
local names, index, g = genders_at(6)
local fields = counter_fields(names, group .. ':n:', group .. ':t:', '')
local s_field, ts_field, at_field = group .. ':s', group .. ':ts', group .. ':at'
local read_fields = {group, unpack(fields)}
read_fields[#read_fields + 1] = EXPIRES
local touched = {}  -- genders whose counters the client's entries changed (reset after each)

-- layout 1's counters of KEYS[k+1] into `have` (the HMGET reply of read_fields); fields of
-- genders not configured now are returned as a flat HSET list (moved, not counted)
local function upgrade(k, have)
  local old = read_hash('HGETALL', KEYS[k + 1])
  if old == nil then return nil end
  local extra = {}
  for f = 1, #old, 2 do
    local gender = string.match(old[f], '^(.*):t$')
    local kind = gender and ':t:' or ':n:'
    gender = gender or old[f]
    local i = index[gender]
    if i then
      have[kind == ':n:' and 2 * i or 2 * i + 1] = old[f + 1]
    else
      extra[#extra + 1] = group .. kind .. gender
      extra[#extra + 1] = old[f + 1]
    end
  end
  return extra
end

return apply_batch({
  nkeys = layout1 and 2 or 1,
  nparams = 2 + g,
  read = function(k)
    -- have[1]: the answer; counters from have[2] (see "Counters" in _lib.lua)
    local have = read_hash('HMGET', KEYS[k], unpack(read_fields))
    if have == nil then return false end
    if have[1] and layout1 then
      local counted = false
      for i = 1, g do counted = counted or have[2 * i] end
      if not counted then  -- answered under layout 1
        have.upgrade = upgrade(k, have)
        if have.upgrade == nil then return false end
      end
    end
    return have, have[#read_fields]
  end,
  apply = function(k, have, acked, m, expiry)
    if have.upgrade then  -- every moved counter is written
      for i = 1, g do touched[i] = have[2 * i] and true or nil end
    end
    for j = 1, m do
      local a = acked[j]
      local i = index[ARGV[a + 1]]
      add_events(have, 2, i, 1, ARGV[a + 2])
      touched[i] = true
    end
    local best, scores, latest = argmax(names, have, 2)
    local set = {group, best, s_field, scores, ts_field, latest, at_field, now}
    for f = 1, #(have.upgrade or {}) do set[#set + 1] = have.upgrade[f] end
    changed_counters(set, nil, fields, have, 2, touched)
    redis.call('HSET', KEYS[k], unpack(with_expiry(set, expiry)))
    if have.upgrade then redis.call('DEL', KEYS[k + 1]) end
    return true, true
  end,
})
