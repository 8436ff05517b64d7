-- Model `top`: the gender with the most events of all time (ties: newest event, then name).
-- Runs on the batch frame of _lib.lua (KEYS/ARGV layout, exactly-once, wrong-type guard).
-- The counters live in the result hash itself (top:n:<g> events, top:t:<g> newest event ts),
-- read once and written once per client per call, with the answer.
--
-- per client (two keys):
--   KEYS[k]   = result hash                          <prefix>:{sN}:r:<cid>
--   KEYS[k+1] = counters of data layout 1 (upgrades)  <prefix>:{sN}:m:top:<cid>
-- ARGV[3] = G, the number of configured genders;  ARGV[4 .. 3+G] = their names, sorted
-- result fields: top, top:s (scores JSON), top:ts (newest event ts), top:at, top:n:<g>, top:t:<g>
--
-- Layout 1 (genderd before data layout 2) kept the counters in KEYS[k+1] as <g> / <g>:t fields.
-- A client answered under it (top set, no counters in the result hash) has them moved into the
-- result hash by the first call that touches it; the old key is deleted then.

local group, now = ARGV[1], ARGV[2]
local names, index, g = genders_at(3)
local fields = counter_fields(names, group .. ':n:', group .. ':t:', '')
local s_field, ts_field, at_field = group .. ':s', group .. ':ts', group .. ':at'
local read_fields = {group, unpack(fields)}

return apply_batch({
  nkeys = 2,
  nparams = 1 + g,
  read = function(k)
    local have = read_hash('HMGET', KEYS[k], unpack(read_fields))
    if have == nil then return false end
    local counts, newest = counters_of(have, 2, g)
    local state = {counts = counts, newest = newest}
    if have[1] then
      local counted = false
      for i = 1, g do counted = counted or counts[i] > 0 end
      if not counted then  -- answered under layout 1
        local old = read_hash('HGETALL', KEYS[k + 1])
        if old == nil then return false end
        state.upgrade = {}  -- fields of genders not configured now: moved, not counted
        for f = 1, #old, 2 do
          local gender = string.match(old[f], '^(.*):t$')
          local kind = gender and ':t:' or ':n:'
          gender = gender or old[f]
          local i = index[gender]
          if i and kind == ':t:' then
            newest[i] = old[f + 1]
          elseif i then
            counts[i] = tonumber(old[f + 1])
          else
            state.upgrade[#state.upgrade + 1] = group .. kind .. gender
            state.upgrade[#state.upgrade + 1] = old[f + 1]
          end
        end
      end
    end
    return state
  end,
  apply = function(k, state, acked, m)
    local counts, newest, touched = state.counts, state.newest, {}
    for j = 1, m do
      local a = acked[j]
      local i = index[ARGV[a + 1]]
      count(counts, newest, i, ARGV[a + 2])
      touched[i] = true
    end
    local set = state.upgrade or {}
    if state.upgrade then
      for i = 1, g do touched[i] = counts[i] > 0 or nil end
    end
    local best, scores, latest = argmax(names, counts, newest)
    redis.call('HSET', KEYS[k], group, best, s_field, scores, ts_field, latest, at_field, now,
      unpack(changed_counters(set, fields, counts, newest, touched)))
    if state.upgrade then redis.call('DEL', KEYS[k + 1]) end
  end,
})
