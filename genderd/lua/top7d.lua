-- Model `top7d` (and every TopWindow model): the gender with the most events whose ts lies in
-- the last W UTC days (ties: newest event, then name). Runs on the batch frame of _frame.lua
-- (KEYS/ARGV layout, exactly-once, wrong-type guard, erasure markers, expiry).
--
-- Events are counted in one hash per client per UTC day (its counters read once and written
-- once per call: what HINCRBY per event would do, in one HSET), which gets a fixed EXPIREAT at
-- the end of the last day it can still be inside a window. An event already older than the
-- window at processing time is acknowledged, not counted.
--
-- The result hash keeps the window's counters as of its day D ("windowed counters" in
-- _window.lua). An apply on that day adds its events to them and writes the answer. An apply on a
-- later day (or with another W, or on layout 1's fields) counts its events in the buckets only
-- and sets <model>:u to 0: the stored answer is then no longer valid, so the next lookup sums
-- the window's buckets (top7d_read.lua), serves that and writes it back with this day's
-- counters. The apply never reads the whole window.
--
-- per client (1 + n keys, n = its entries in the call):
--   KEYS[k]     = result hash                       <prefix>:{sN}:r:<cid>
--   KEYS[k+j]   = day bucket of the client's j-th entry  <prefix>:{sN}:m:<model>:d<day>:<cid>
-- ARGV[5] = the oldest data layout the deployment may hold ("1", "2" or "3"; see layout.py)
-- ARGV[6] = window length W in days;  ARGV[7] = G, the number of configured genders;
-- ARGV[8 .. 7+G] = their names, sorted
-- result fields: <model> (the answer), :at (when it was written), :u (answer valid until, ms),
--                :w ("D,W" of the counters), :n:<g> and :t:<g> (the counters; the API derives
--                the scores and the newest ts from them)
-- Layouts 1 and 2 also kept :s (scores JSON) and :ts (newest ts): where the deployment may hold
-- them, the first call that counts an event of such a client deletes them.
-- grades: the answer before an entry, read at its time, is the argmax over the window of the
-- entry's day D. For entries of today with today's counters in the result hash, those counters
-- (as the entries are added); otherwise the window's buckets, which the read asks the caller
-- for (defer): the x extra keys are the buckets of days hi-x+1 .. hi, hi the latest day of an
-- entry to grade and x = hi - lo + W, lo the earliest (TopWindow.grading_keys).
-- uses: _basics.lua _expiry.lua _grades.lua _frame.lua _counters.lua _window.lua

local group, now, oldest, window = ARGV[1], ARGV[2], tonumber(ARGV[5]), tonumber(ARGV[6])
local names, index, g = genders_at(7)
local today = math.floor(tonumber(now) / MS_PER_DAY)
local first_day = today - window + 1
local this_window = fmt(today) .. ',' .. fmt(window)
local fields = counter_fields(names, group .. ':n:', group .. ':t:', '')
local bucket_fields = counter_fields(names, '', '', ':t')
local w_field, u_field = group .. ':w', group .. ':u'
-- have[1] = :w, have[2] = the answer, have[3] = :u, counters from have[4] (_counters.lua)
-- then :expires, and where earlier layouts may be held, layout 2's scores field
local read_fields = {w_field, group, u_field, unpack(fields)}
local EXPIRY, OLD_SCORES = #read_fields + 1, #read_fields + 2
read_fields[EXPIRY] = EXPIRES
if oldest < 3 then read_fields[OLD_SCORES] = group .. ':s' end
local old_fields = {group .. ':s', group .. ':ts'}
local ADD, STALE = 1, 2
local touched = {}  -- gender numbers whose window counters the client's entries changed

-- Grading: whether the entries to grade (of `spec`) need the window's buckets, and the latest
-- day of one of them.
local function needs_window(spec, have, first, n)
  local needs, hi = have.mode ~= ADD, nil
  for j = 1, n do
    local a = first + 3 * j - 3
    if gradable(spec, ARGV[a], ARGV[a + 2]) then
      local day = math.floor(tonumber(ARGV[a + 2]) / MS_PER_DAY)
      needs = needs or day ~= today
      if hi == nil or day > hi then hi = day end
    end
  end
  return needs, hi
end

-- The buckets KEYS[at .. at+x-1] of days hi-x+1 .. hi: their counters by day (flat, from 1),
-- or nil when one holds something other than a hash.
local function read_window(at, x, hi)
  local by_day = {}
  for d = 1, x do
    local reply = read_hash('HMGET', KEYS[at + d - 1], unpack(bucket_fields))
    if reply == nil then return nil end
    by_day[hi - x + d] = reply
  end
  return by_day
end

-- The answer at a time of day `day` from the buckets by day: the window D-W+1 .. D summed.
local function window_answer(by_day, day)
  local sums = {}
  for d = day - window + 1, day do
    local counters = by_day[d]
    if counters then
      for i = 1, g do
        local n = tonumber(counters[2 * i - 1])
        if n then add_events(sums, 1, i, n, counters[2 * i]) end
      end
    end
  end
  return argmax(names, sums, 1) or false
end

return apply_batch({
  per_event_keys = true,
  nparams = 3 + g,
  grades = true,
  read = function(k, first, n, grading, extra, x)
    local have = read_hash('HMGET', KEYS[k], unpack(read_fields))
    if have == nil then return false end
    if have[1] == this_window then
      have.mode = ADD  -- this day's counters: add to them
    elseif not (have[1] or have[2] or have[3]) then
      have.mode = ADD  -- nothing in or after the window: counters from zero
      for c = 4, 3 + 2 * g do have[c] = false end
    else
      have.mode = STALE  -- counters of another day or window, or layout 1
    end
    -- the buckets of the entries' days (usually one): days, HMGET replies, keys, new or not
    local days, replies, keys, fresh = {}, {}, {}, {}
    for j = 1, n do
      local day = math.floor(tonumber(ARGV[first + 3 * j - 1]) / MS_PER_DAY)
      local known = day < first_day
      for b = 1, #days do known = known or days[b] == day end
      if not known then
        local reply = read_hash('HMGET', KEYS[k + j], unpack(bucket_fields))
        if reply == nil then return false end
        local b = #days + 1
        days[b], replies[b], keys[b], fresh[b] = day, reply, KEYS[k + j], true
        for c = 1, 2 * g do fresh[b] = fresh[b] and not reply[c] end
      end
    end
    have.days, have.replies, have.keys, have.fresh = days, replies, keys, fresh
    if grading then
      local needs, hi = needs_window(grading, have, first, n)
      if needs then
        if extra == nil then return have, have[EXPIRY], defer end
        have.by_day = read_window(extra, x, hi)
        if have.by_day == nil then return false end
      end
    end
    return have, have[EXPIRY]
  end,
  apply = function(k, have, acked, m, expiry, predictions)
    local days, replies, by_day = have.days, have.replies, have.by_day
    -- per bucket touched: its counters as they change (a counter changed by several events
    -- is listed again each time: HSET keeps the last value, the final one)
    local writes = {}
    local ahead = have.mode == ADD and have[3] and not have[2]  -- a bucket after today exists
    for j = 1, m do
      local a = acked[j]
      local i, ts = index[ARGV[a + 1]], ARGV[a + 2]
      local day = math.floor(tonumber(ts) / MS_PER_DAY)
      if predictions and by_day then
        predictions[j] = window_answer(by_day, day)
      elseif predictions then
        predictions[j] = argmax(names, have, 4) or false
      end
      if by_day and by_day[day] and day >= first_day then add_events(by_day[day], 1, i, 1, ts) end
      if day >= first_day then
        local b = 1
        while days[b] ~= day do b = b + 1 end
        local set = writes[b] or {}
        writes[b] = set
        count_event(replies[b], 2 * i - 1, ts, set, bucket_fields)
        if day > today then
          ahead = true
        elseif have.mode == ADD then
          add_events(have, 4, i, 1, ts)
          touched[i] = true
        end
      end
    end
    for b, set in pairs(writes) do
      redis.call('HSET', have.keys[b], unpack(set))
      if have.fresh[b] then
        redis.call('EXPIREAT', have.keys[b], fmt((days[b] + window) * (MS_PER_DAY / 1000)))
      end
    end
    -- only events older than the window: the result hash exists if something else is in it
    if next(writes) == nil then
      return have[EXPIRY] or have[1] or have[2] or have[3], false
    end
    if have[OLD_SCORES] then redis.call('HDEL', KEYS[k], unpack(old_fields)) end
    if have.mode == STALE then
      if have[3] ~= '0' or expiry then
        redis.call('HSET', KEYS[k], unpack(with_expiry({u_field, '0'}, expiry)))
        return true, expiry ~= nil
      end
      return true, false
    end
    -- the answer from the window's counters (from have[4]); only changed counters are written
    local set, del = window_fields(group, names, fields, have, 4, ahead, today, window, now,
      have[1], touched)
    if #del > 0 then redis.call('HDEL', KEYS[k], unpack(del)) end
    with_expiry(set, expiry)
    if #set > 0 then redis.call('HSET', KEYS[k], unpack(set)) end
    return true, expiry ~= nil
  end,
})
