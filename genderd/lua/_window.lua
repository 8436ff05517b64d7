-- Shared chunk: windowed counters (top7d and every TopWindow model). Defines window_sums,
-- window_fields, store_window (and window_names, their cache).
-- uses: _basics.lua _counters.lua
--
-- A client's day buckets hold its counters per UTC day (fields g and g:t). Its result hash
-- keeps, besides the answer, the window's counters as of one day D (<model>:n:<g>,
-- <model>:t:<g>) and that day and window (<model>:w = "D,W"), so that an apply on day D adds
-- its events to them instead of reading the W buckets. The answer is valid until the end of
-- day D (<model>:u; 0: not valid); lookups after that sum the buckets of days D-W+1 .. D again
-- (D = today at "now"; an event may be up to a day ahead of the clock, so tomorrow's bucket may
-- exist). The answer is kept while a bucket after D exists, even when the window is empty.

-- Sum the buckets KEYS[k+1 .. k+window] (days D-W+1 .. D) over the fields `bucket_fields`:
-- flat counters from index 1, or nil when a bucket holds something other than a hash.
local function window_sums(k, window, bucket_fields, g)
  local sums = {}
  for d = 1, window do
    local reply = read_hash('HMGET', KEYS[k + d], unpack(bucket_fields))
    if reply == nil then return nil end
    for i = 1, g do
      local n = tonumber(reply[2 * i - 1])
      if n then add_events(sums, 1, i, n, reply[2 * i]) end
    end
  end
  return sums
end

-- The fields of a windowed answer of `model` computed at day `today` with window `window`
-- from the counters t[at..] (`fields`: the result hash's counter fields; `marked`: the genders
-- whose counters changed); `ahead` tells whether a bucket after today exists. Returns the
-- fields to set (a flat name/value list) and the fields to delete. `stored_w` is the stored
-- <model>:w: when it is already this day's and window's, :w and :u are not written again;
-- otherwise every counter is, and those of another day (when there were any) that are zero now
-- are deleted.
-- per model: its answer and window field names, and the "D,W" and valid-until strings of the
-- call's day, built once per script call instead of once per client
local window_names = {}

local function window_fields(model, names, fields, t, at, ahead, today, window, now, stored_w,
                             marked)
  local f = window_names[model]
  if f == nil then
    f = {model = model, s = model .. ':s', ts = model .. ':ts', at = model .. ':at',
      w = model .. ':w', u = model .. ':u'}
    window_names[model] = f
  end
  if f.day ~= today or f.window ~= window then
    f.day, f.window = today, window
    f.dw, f.valid_until = fmt(today) .. ',' .. fmt(window), fmt((today + 1) * MS_PER_DAY)
  end
  local best = argmax(names, t, at)
  -- (:s and :ts are layout 2's scores and newest ts, deleted with the answer where left)
  if best == nil and not ahead then
    local del = {f.w, f.u, f.model, f.s, f.ts, f.at}
    for i = 1, #fields do del[#del + 1] = fields[i] end
    return {}, del
  end
  local set, del = {}, {}
  if best == nil then
    del = {f.model, f.s, f.ts, f.at}
  else
    set = {f.model, best, f.at, now}
  end
  if f.dw ~= stored_w then
    local n = #set
    set[n + 1], set[n + 2], set[n + 3], set[n + 4] = f.w, f.dw, f.u, f.valid_until
    for i = 1, #names do marked[i] = true end  -- new counters: all of them
  end
  changed_counters(set, stored_w and del or nil, fields, t, at, marked)
  return set, del
end

-- Write the windowed answer (see window_fields) into the result hash `result`.
local function store_window(result, ...)
  local set, del = window_fields(...)
  if #del > 0 then redis.call('HDEL', result, unpack(del)) end
  if #set > 0 then redis.call('HSET', result, unpack(set)) end
end
