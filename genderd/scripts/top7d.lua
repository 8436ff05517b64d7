-- Model `top7d` (and every TopWindow model): the gender with the most events whose ts lies in
-- the last W UTC days (ties: newest event, then name). Runs on the batch frame of _lib.lua
-- (KEYS/ARGV layout, exactly-once, wrong-type guard).
--
-- Events are counted in one hash per client per UTC day (its counters read once and written
-- once per call: what HINCRBY per event would do, in one HSET), which gets a fixed EXPIREAT at
-- the end of the last day it can still be inside a window. An event already older than the
-- window at processing time is acknowledged, not counted.
--
-- The result hash keeps the window's counters as of its day D ("windowed counters" in
-- _lib.lua). An apply on that day adds its events to them and writes the answer. An apply on a
-- later day (or with another W, or on layout 1's fields) counts its events in the buckets only
-- and sets <model>:u to 0: the stored answer is then no longer valid, so the next lookup sums
-- the window's buckets (top7d_read.lua), serves that and writes it back with this day's
-- counters. The apply never reads the whole window.
--
-- per client (1 + n keys, n = its entries in the call):
--   KEYS[k]     = result hash                       <prefix>:{sN}:r:<cid>
--   KEYS[k+j]   = day bucket of the client's j-th entry  <prefix>:{sN}:m:<model>:d<day>:<cid>
-- ARGV[3] = window length W in days;  ARGV[4] = G, the number of configured genders;
-- ARGV[5 .. 4+G] = their names, sorted
-- result fields: <model>, :s (scores JSON), :ts (newest event ts), :at, :u (answer valid until,
--                ms), :w ("D,W" of the counters), :n:<g> and :t:<g> (the counters)

local group, now, window = ARGV[1], ARGV[2], tonumber(ARGV[3])
local names, index, g = genders_at(4)
local today = math.floor(tonumber(now) / MS_PER_DAY)
local first_day = today - window + 1
local this_window = string.format('%d,%d', today, window)
local fields = counter_fields(names, group .. ':n:', group .. ':t:', '')
local bucket_fields = counter_fields(names, '', '', ':t')
local w_field, u_field = group .. ':w', group .. ':u'
local read_fields = {w_field, group, u_field, unpack(fields)}

return apply_batch({
  per_event_keys = true,
  nparams = 2 + g,
  read = function(k, first, n)
    local have = read_hash('HMGET', KEYS[k], unpack(read_fields))
    if have == nil then return false end
    local state = {buckets = {}, w = have[1], u = have[3]}
    if have[1] == this_window then
      -- this day's counters: add to them (an answer kept without counts means a bucket after
      -- today exists)
      state.counts, state.newest = counters_of(have, 4, g)
      state.ahead = have[3] and not have[2]
    elseif not (have[1] or have[2] or have[3]) then
      state.counts, state.newest = counters_of({}, 1, g)  -- nothing in or after the window
      state.ahead = false
    else
      state.stale = true
    end
    for j = 1, n do
      local day = math.floor(tonumber(ARGV[first + 3 * j - 1]) / MS_PER_DAY)
      if day >= first_day and state.buckets[day] == nil then
        local reply = read_hash('HMGET', KEYS[k + j], unpack(bucket_fields))
        if reply == nil then return false end
        local counts, newest = counters_of(reply, 1, g)
        local fresh = true  -- (a bucket holding only genders no longer configured is not new,
        for i = 1, g do fresh = fresh and not newest[i] end  -- but its EXPIREAT is the same)
        state.buckets[day] = {key = KEYS[k + j], counts = counts, newest = newest,
          fresh = fresh, touched = {}}
      end
    end
    return state
  end,
  apply = function(k, state, acked, m)
    local counted, ahead, touched = false, state.ahead, {}
    for j = 1, m do
      local a = acked[j]
      local i, ts = index[ARGV[a + 1]], ARGV[a + 2]
      local day = math.floor(tonumber(ts) / MS_PER_DAY)
      if day >= first_day then
        local b = state.buckets[day]
        count(b.counts, b.newest, i, ts)
        b.touched[i] = true
        counted = true
        if day > today then
          ahead = true
        elseif not state.stale then
          count(state.counts, state.newest, i, ts)
          touched[i] = true
        end
      end
    end
    if not counted then return end  -- only events older than the window
    for day, b in pairs(state.buckets) do
      if next(b.touched) then
        redis.call('HSET', b.key,
          unpack(changed_counters({}, bucket_fields, b.counts, b.newest, b.touched)))
        if b.fresh then
          redis.call('EXPIREAT', b.key, fmt((day + window) * (MS_PER_DAY / 1000)))
        end
      end
    end
    if state.stale then
      if state.u ~= '0' then redis.call('HSET', KEYS[k], u_field, '0') end
    else
      store_window(KEYS[k], group, names, fields, state.counts, state.newest, ahead, today,
        window, now, state.w, touched)
    end
  end,
})
