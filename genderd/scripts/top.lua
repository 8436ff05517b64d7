-- Model `top`: the gender with the most events of all time (ties: newest event, then name).
-- Runs on the batch frame of _lib.lua (KEYS/ARGV layout, exactly-once, wrong-type guard).
-- The counters live in the result hash itself: top:s (the scores served, per-gender counts)
-- and top:t (newest event per gender), read once and written once per client per call.
--
-- per client (two keys):
--   KEYS[k]   = result hash                          <prefix>:{sN}:r:<cid>
--   KEYS[k+1] = counters of data layout 1 (upgrades)  <prefix>:{sN}:m:top:<cid>
-- no parameters
-- result fields: top, top:s (scores JSON), top:ts (newest event ts), top:t, top:at
--
-- Layout 1 (genderd before data layout 2) kept the counters in KEYS[k+1] as g / g:t fields.
-- A client answered under it (top set, top:t absent) has them moved into the result hash by
-- the first call that touches it; the old key is deleted then.

local group, now = ARGV[1], ARGV[2]
local s_field, t_field, ts_field, at_field =
  group .. ':s', group .. ':t', group .. ':ts', group .. ':at'

return apply_batch({
  nkeys = 2,
  nparams = 0,
  read = function(k)
    local have = read_hash('HMGET', KEYS[k], s_field, t_field, group)
    if have == nil then return false end
    if have[2] or not have[3] then
      return {counts = parse_counts(have[1]), newest = parse_counts(have[2])}
    end
    local flat = read_hash('HGETALL', KEYS[k + 1])
    if flat == nil then return false end
    local counts, newest = {}, {}
    add_flat(flat, counts, newest)
    return {counts = counts, newest = newest, upgrade = true}
  end,
  apply = function(k, state, acked, m)
    local counts, newest = state.counts, state.newest
    for j = 1, m do
      local i = acked[j]
      count(counts, newest, ARGV[i + 1], tonumber(ARGV[i + 2]))
    end
    local best, scores, latest, newest_json = argmax(counts, newest)
    redis.call('HSET', KEYS[k], group, best, s_field, scores, ts_field, latest,
      t_field, newest_json, at_field, now)
    if state.upgrade then redis.call('DEL', KEYS[k + 1]) end
  end,
})
