-- Model `top`: the gender with the most events of all time (ties: newest event, then name).
-- Runs on the batch frame of _frame.lua (KEYS/ARGV layout, exactly-once, wrong-type guard,
-- erasure markers, expiry).
-- The counters live in the result hash itself (top:n:<g> events, top:t:<g> newest event ts),
-- read once and written once per client per call, with the answer: only the counters that
-- change, the answer and its time are written (the API derives the scores and the newest ts
-- from the counters).
--
-- per client (two keys, or one when ARGV[5] > 1):
--   KEYS[k]   = result hash                          <prefix>:{sN}:r:<cid>
--   KEYS[k+1] = counters of data layout 1 (upgrades)  <prefix>:{sN}:m:top:<cid>
-- ARGV[5] = the oldest data layout the deployment may hold ("1", "2" or "3"; see layout.py)
-- ARGV[6] = G, the number of configured genders;  ARGV[7 .. 6+G] = their names, sorted
-- result fields: top (the answer), top:at (when it was written), top:n:<g>, top:t:<g>
-- grades: the answer before an entry is the argmax of the counters so far (kept as the entries
-- are counted: `lead`)
--
-- Upgrades, where the deployment may hold them:
-- - layout 1 kept the counters in KEYS[k+1] as <g> / <g>:t fields. A client answered under it
--   (top set, no counters in the result hash) has them moved into the result hash by the first
--   call that touches it; the old key is deleted then.
-- - layouts 1 and 2 also kept top:s (scores JSON) and top:ts (newest ts): the first call that
--   touches such a client deletes them.
-- uses: _basics.lua _expiry.lua _frame.lua _counters.lua

local group, now = ARGV[1], ARGV[2]
local oldest = tonumber(ARGV[5])
local names, index, g = genders_at(6)
local fields = counter_fields(names, group .. ':n:', group .. ':t:', '')
local at_field = group .. ':at'
-- have[1 .. 2G]: the counters (see _counters.lua); then :expires; then the answer (the argmax
-- of the counters: where grading starts from, and layout 1's sign of an old client); then,
-- where layouts 1-2 may be held, their scores field
local read_fields = {unpack(fields)}
local EXPIRY, ANSWER, OLD_SCORES = 2 * g + 1, 2 * g + 2, 2 * g + 3
read_fields[EXPIRY] = EXPIRES
read_fields[ANSWER] = group
if oldest < 3 then read_fields[OLD_SCORES] = group .. ':s' end
local old_fields = {group .. ':s', group .. ':ts'}

-- layout 1's counters of KEYS[k+1], as a flat HSET list of the result hash's fields (every
-- gender's, configured or not); the configured genders' also go into `have` (counted). nil
-- when the key is not a hash
local function upgrade(k, have)
  local old = read_hash('HGETALL', KEYS[k + 1])
  if old == nil then return nil end
  local moved = {}
  for f = 1, #old, 2 do
    local gender = string.match(old[f], '^(.*):t$')
    local kind = gender and ':t:' or ':n:'
    gender = gender or old[f]
    local i = index[gender]
    if i then have[kind == ':n:' and 2 * i - 1 or 2 * i] = old[f + 1] end
    moved[#moved + 1] = group .. kind .. gender
    moved[#moved + 1] = old[f + 1]
  end
  return moved
end

return apply_batch({
  nkeys = oldest < 2 and 2 or 1,
  nparams = 2 + g,
  grades = true,
  read = function(k)
    local have = read_hash('HMGET', KEYS[k], unpack(read_fields))
    if have == nil then return false end
    if oldest < 2 and have[ANSWER] then
      local counted = false
      for c = 1, 2 * g, 2 do counted = counted or have[c] end
      if not counted then  -- answered under layout 1
        have.upgrade = upgrade(k, have)
        if have.upgrade == nil then return false end
      end
    end
    return have, have[EXPIRY]
  end,
  apply = function(k, have, acked, m, expiry, predictions, each)
    -- the answer, its time, then each counter as it changes (a counter changed by several
    -- events is listed again each time: HSET keeps the last value, the final one)
    local set = {group, false, at_field, now}
    for f = 1, #(have.upgrade or {}) do set[#set + 1] = have.upgrade[f] end  -- moved
    -- the answer before each entry: the stored one (counters moved from layout 1: computed),
    -- then kept as the entries are counted; the predictions counted here (the frame's counts)
    local best = predictions
      and (have.upgrade and argmax_index(names, have, 1) or index[have[ANSWER] or ''])
    local predicted, correct = 0, 0
    for j = 1, m do
      local a = acked[j]
      local i = index[ARGV[a + 1]]
      count_event(have, 2 * i - 1, ARGV[a + 2], set, fields)
      if predictions then
        if each then predictions[j] = best and names[best] or false end
        if best == i then  -- the leader's own event keeps it
          predicted, correct = predicted + 1, correct + 1
        elseif best then
          predicted, best = predicted + 1, lead(have, 1, best, i)
        else
          best = i
        end
      end
    end
    set[2] = argmax(names, have, 1)
    redis.call('HSET', KEYS[k], unpack(with_expiry(set, expiry)))
    if have[OLD_SCORES] or have.upgrade then redis.call('HDEL', KEYS[k], unpack(old_fields)) end
    if have.upgrade then redis.call('DEL', KEYS[k + 1]) end
    return true, true, predicted, correct
  end,
})
