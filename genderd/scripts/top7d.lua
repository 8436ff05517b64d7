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
local this_window = fmt(today) .. ',' .. fmt(window)
local valid_until = fmt((today + 1) * MS_PER_DAY)
local fields = counter_fields(names, group .. ':n:', group .. ':t:', '')
local bucket_fields = counter_fields(names, '', '', ':t')
local w_field, u_field = group .. ':w', group .. ':u'
local s_field, ts_field, at_field = group .. ':s', group .. ':ts', group .. ':at'
-- have[1] = :w, have[2] = the answer, have[3] = :u, have[2+2i] / have[3+2i] = counters of gender i
local read_fields = {w_field, group, u_field, unpack(fields)}
local ADD, STALE = 1, 2
local touched = {}  -- gender numbers whose window counters the client's entries changed

-- add one event of gender i at ts to counters kept as strings in `t` (count at t[c], newest
-- ts at t[c+1], c = count_at)
local function add(t, c, ts)
  t[c] = (tonumber(t[c]) or 0) + 1
  local newest = t[c + 1]
  if not newest or tonumber(ts) > tonumber(newest) then t[c + 1] = ts end
end

return apply_batch({
  per_event_keys = true,
  nparams = 2 + g,
  read = function(k, first, n)
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
    return have
  end,
  apply = function(k, have, acked, m)
    local days, replies = have.days, have.replies
    local changed = {}  -- per bucket: gender numbers changed
    local ahead = have.mode == ADD and have[3] and not have[2]  -- a bucket after today exists
    for j = 1, m do
      local a = acked[j]
      local i, ts = index[ARGV[a + 1]], ARGV[a + 2]
      local day = math.floor(tonumber(ts) / MS_PER_DAY)
      if day >= first_day then
        local b = 1
        while days[b] ~= day do b = b + 1 end
        add(replies[b], 2 * i - 1, ts)
        changed[b] = changed[b] or {}
        changed[b][i] = true
        if day > today then
          ahead = true
        elseif have.mode == ADD then
          add(have, 2 + 2 * i, ts)
          touched[i] = true
        end
      end
    end
    for b, genders in pairs(changed) do
      local reply, set = replies[b], {}
      for i in pairs(genders) do
        local n = #set
        set[n + 1], set[n + 2] = bucket_fields[2 * i - 1], reply[2 * i - 1]
        set[n + 3], set[n + 4] = bucket_fields[2 * i], reply[2 * i]
      end
      redis.call('HSET', have.keys[b], unpack(set))
      if have.fresh[b] then
        redis.call('EXPIREAT', have.keys[b], fmt((days[b] + window) * (MS_PER_DAY / 1000)))
      end
    end
    if next(changed) == nil then return end  -- only events older than the window
    if have.mode == STALE then
      if have[3] ~= '0' then redis.call('HSET', KEYS[k], u_field, '0') end
      return
    end
    -- the answer from the window's counters; only changed counters are written
    local set, n, scores, sep = {}, 0, '{"', ''
    local best, best_n, best_t, latest, latest_t = nil, 0, 0, nil, -1
    for i = 1, g do
      local c = tonumber(have[2 + 2 * i])
      if c and c > 0 then
        local ts = have[3 + 2 * i]
        local t = tonumber(ts)
        scores = scores .. sep .. names[i] .. '":' .. c
        sep = ',"'
        if c > best_n or (c == best_n and t > best_t) then best, best_n, best_t = i, c, t end
        if t > latest_t then latest, latest_t = ts, t end
      end
      if touched[i] then
        touched[i] = nil
        set[n + 1], set[n + 2], set[n + 3], set[n + 4] = fields[2 * i - 1], c, fields[2 * i],
          have[3 + 2 * i]
        n = n + 4
      end
    end
    if best then
      set[n + 1], set[n + 2], set[n + 3], set[n + 4] = group, names[best], s_field, scores .. '}'
      set[n + 5], set[n + 6], set[n + 7], set[n + 8] = ts_field, latest, at_field, now
      n = n + 8
    end
    if have[1] ~= this_window then
      set[n + 1], set[n + 2], set[n + 3], set[n + 4] = w_field, this_window, u_field, valid_until
    end
    if #set > 0 then redis.call('HSET', KEYS[k], unpack(set)) end  -- (tomorrow's events only)
  end,
})
