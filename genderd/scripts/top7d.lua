-- Model `top7d` (and every TopWindow model): the gender with the most events whose ts lies in
-- the last W UTC days (ties: newest event, then name). Runs on the batch frame of _lib.lua
-- (KEYS/ARGV layout, exactly-once, wrong-type guard).
--
-- Events are counted (HINCRBY) in one hash per client per UTC day, which gets a fixed EXPIREAT
-- at the end of the last day it can still be inside a window. An event already older than
-- the window at processing time is acknowledged, not counted. The result hash keeps the
-- window's counters as of day D ("windowed counters" in _lib.lua): an apply on the same day
-- adds to them, the first apply of a later day (or of another W) sums the buckets again.
--
-- per client (W+2 keys):
--   KEYS[k]              = result hash                 <prefix>:{sN}:r:<cid>
--   KEYS[k+1 .. k+W+1]   = buckets of days D-W+1 .. D+1 <prefix>:{sN}:m:<model>:d<day>:<cid>
--                          (D = today at "now"; max_future is at most a day)
-- ARGV[3] = window length W in days
-- result fields: <model>, :s (scores JSON), :ts (newest event ts), :t (newest per gender),
--                :w ("D,W" of the counters), :u (answer valid until, ms), :at

local group, now, window = ARGV[1], ARGV[2], tonumber(ARGV[3])
local today = math.floor(tonumber(now) / MS_PER_DAY)
local first_day = today - window + 1
local this_window = string.format('%d,%d', today, window)
local w_field, s_field, t_field, u_field =
  group .. ':w', group .. ':s', group .. ':t', group .. ':u'

-- offset of an event's day among the client's buckets (1 .. W+1; < 1: older than the window)
local function offset(ts)
  return math.floor(ts / MS_PER_DAY) - first_day + 1
end

-- bucket at offset `off` as read: {counts, newest, fresh}, or nil when it is not a hash
local function bucket(flat)
  local counts, newest = {}, {}
  add_flat(flat, counts, newest)
  return {counts = counts, newest = newest, fresh = #flat == 0}
end

return apply_batch({
  nkeys = window + 2,
  nparams = 1,
  read = function(k, first, n)
    local have = read_hash('HMGET', KEYS[k], w_field, s_field, t_field, group, u_field)
    if have == nil then return false end
    local state = {flats = {}, buckets = {}}
    if have[1] == this_window then
      -- the counters are this window's: add to them (an answer kept without counts means a
      -- bucket after today exists)
      state.counts, state.newest = parse_counts(have[2]), parse_counts(have[3])
      state.ahead = have[5] and not have[4]
    elseif not (have[1] or have[2] or have[4] or have[5]) then
      state.counts, state.newest, state.ahead = {}, {}, false  -- nothing in or after the window
    else
      state.recompute = true  -- counters of an earlier day or window (or layout 1): sum again
      for d = 1, window + 1 do
        local flat = read_hash('HGETALL', KEYS[k + d])
        if flat == nil then return false end
        state.flats[d] = flat
      end
    end
    for i = first, first + 3 * (n - 1), 3 do
      local off = offset(tonumber(ARGV[i + 2]))
      if off >= 1 and state.buckets[off] == nil then
        local flat = state.flats[off] or read_hash('HGETALL', KEYS[k + off])
        if flat == nil then return false end
        state.buckets[off] = bucket(flat)
      end
    end
    return state
  end,
  apply = function(k, state, acked, m)
    local counted, newer, ahead = {}, {}, state.ahead
    for j = 1, m do
      local i = acked[j]
      local gender, ts = ARGV[i + 1], tonumber(ARGV[i + 2])
      local off = offset(ts)
      if off >= 1 then
        local b = state.buckets[off]
        counted[off] = counted[off] or {}
        counted[off][gender] = (counted[off][gender] or 0) + 1
        if b.newest[gender] == nil or ts > b.newest[gender] then
          b.newest[gender] = ts
          newer[off] = newer[off] or {}
          newer[off][gender] = ts
        end
        if off > window then
          ahead = true
        elseif not state.recompute then
          count(state.counts, state.newest, gender, ts)
        end
      end
    end
    if next(counted) == nil then return end  -- only events older than the window
    for off, genders in pairs(counted) do
      local key = KEYS[k + off]
      for gender, n in pairs(genders) do redis.call('HINCRBY', key, gender, n) end
      if newer[off] then
        local set = {}
        for gender, ts in pairs(newer[off]) do
          set[#set + 1] = gender .. ':t'
          set[#set + 1] = fmt(ts)
        end
        redis.call('HSET', key, unpack(set))
      end
      if state.buckets[off].fresh then
        redis.call('EXPIREAT', key, fmt((first_day + off - 1 + window) * (MS_PER_DAY / 1000)))
      end
    end
    local counts, newest = state.counts, state.newest
    if state.recompute then
      counts, newest = window_sums(k, window, state.flats)
      for j = 1, m do
        local i = acked[j]
        local ts = tonumber(ARGV[i + 2])
        local off = offset(ts)
        if off >= 1 and off <= window then count(counts, newest, ARGV[i + 1], ts) end
      end
      ahead = ahead or #state.flats[window + 1] > 0
    end
    store_window(KEYS[k], group, counts, newest, ahead, today, window, now)
  end,
})
