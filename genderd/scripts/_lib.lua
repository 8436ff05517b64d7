-- Shared chunk, prepended by the loader to the scripts that name it (Redis scripts cannot
-- import). Defines the batch frame every model's apply script runs on, and the helpers of
-- the counting models. Touches only keys its callers pass in.
--
-- The batch frame (apply_batch) owns the KEYS/ARGV layout of every apply script:
--
--   KEYS[1] = shard stream            <prefix>:{sN}:events
--   KEYS[2] = shard stats hash        <prefix>:{sN}:stats
--   KEYS[3..] = per client of the batch, model.nkeys keys (the model's own contract)
--   ARGV[1] = consumer group (the model name);  ARGV[2] = processing time "now" (ms)
--   ARGV[3 .. 2+model.nparams] = the model's parameters
--   then per client, in the order of its keys: n, then n entries of (id, gender, ts)
--   returns: {number of entries applied, ids of the entries skipped...}
--
-- The caller groups the batch per client, so every key is read once per call. For each client
-- the frame asks the model to read its state (the read is also the wrong-type guard: a key
-- holding something other than a hash makes read return false, before anything is written,
-- because Redis does not roll back a script that fails halfway; the client's entries are then
-- skipped: left pending, retried, dead-lettered after max_deliveries). Then it acknowledges
-- each entry; an entry whose XACK returns 0 (already acknowledged, by this call's stale twin or
-- by a consumer that reclaimed it) changes nothing. The model's apply gets the entries that
-- were acknowledged and writes the client's new state and answer, once.
--
-- Counters (top's scores, top7d's day buckets and window) hold, per gender g, the number of
-- events and the greatest event ts among them ("newest"). Numbers are formatted with %d: Lua
-- 5.1's tostring() prints 1.7e+12 for milliseconds.

local MS_PER_DAY = 86400000

local function fmt(n)
  return string.format('%d', n)
end

-- redis.pcall for a read whose failure means "this key is not a hash": the reply, or nil on
-- WRONGTYPE. Any other error is raised.
local function read_hash(...)
  local reply = redis.pcall(...)
  if type(reply) == 'table' and reply.err then
    if string.find(reply.err, 'WRONGTYPE', 1, true) then return nil end
    error(reply)
  end
  return reply
end

-- model = {nkeys = keys per client, nparams = parameters after "now",
--          read = function(k, first, n) -> state, or false when a key has a wrong type,
--          apply = function(k, state, acked, m)}
-- k is the index of the client's first key; ARGV[first], ARGV[first+3], ... are the ids of
-- its n entries (gender and ts follow each id). acked[1..m] are the ARGV indexes of the ids
-- acknowledged by this call (m >= 1).
local function apply_batch(model)
  local stream, group = KEYS[1], ARGV[1]
  local applied, skipped, acked = 0, {}, {}
  local k, a = 3, 3 + model.nparams
  while a <= #ARGV do
    local n = tonumber(ARGV[a])
    local first, stop = a + 1, a + 3 * n
    local state = model.read(k, first, n)
    if state == false then
      for i = first, stop, 3 do skipped[#skipped + 1] = ARGV[i] end
    else
      local m = 0
      for i = first, stop, 3 do
        if redis.call('XACK', stream, group, ARGV[i]) == 1 then
          m = m + 1
          acked[m] = i
        end
      end
      if m > 0 then
        applied = applied + m
        model.apply(k, state, acked, m)
      end
    end
    k = k + model.nkeys
    a = stop + 1
  end
  if applied > 0 then redis.call('HINCRBY', KEYS[2], group .. ':applied', applied) end
  return {applied, unpack(skipped)}
end

-- Counters as two tables, counts[g] and newest[g].

-- Add one event of `gender` at `ts` (a number).
local function count(counts, newest, gender, ts)
  counts[gender] = (counts[gender] or 0) + 1
  if newest[gender] == nil or ts > newest[gender] then newest[gender] = ts end
end

-- Add a flat counter hash reply {g, n, g:t, ts, ...} (HGETALL of a bucket).
local function add_flat(flat, counts, newest)
  for i = 1, #flat, 2 do
    local field, value = flat[i], tonumber(flat[i + 1])
    local gender = string.match(field, '^(.*):t$')
    if gender then
      if newest[gender] == nil or value > newest[gender] then newest[gender] = value end
    else
      counts[field] = (counts[field] or 0) + value
    end
  end
end

-- A JSON object of gender -> integer, as written by json_counts (or nil): a table.
local function parse_counts(json)
  if not json then return {} end
  return cjson.decode(json)
end

-- JSON object of the genders of `names` (sorted) -> values of `tab`, integers.
-- Gender names are validated ([a-z][a-z0-9_-]*): no JSON escaping needed.
local function json_counts(names, tab)
  local parts = {}
  for i, gender in ipairs(names) do parts[i] = '"' .. gender .. '":' .. fmt(tab[gender]) end
  return '{' .. table.concat(parts, ',') .. '}'
end

-- The answer for counters: most events; ties to the newest event, then the alphabetically
-- smallest name. Returns gender, scores JSON, newest ts, newest-per-gender JSON (strings), or
-- nil when nothing is counted.
local function argmax(counts, newest)
  local names = {}
  for gender, n in pairs(counts) do
    if n > 0 then names[#names + 1] = gender end
  end
  if #names == 0 then return nil end
  table.sort(names)
  local best, latest = nil, nil
  for _, gender in ipairs(names) do
    local n, t = counts[gender], newest[gender] or 0
    if best == nil or n > counts[best] or (n == counts[best] and t > (newest[best] or 0)) then
      best = gender
    end
    if latest == nil or t > latest then latest = t end
  end
  return best, json_counts(names, counts), fmt(latest), json_counts(names, newest)
end

-- Windowed counters (top7d and every TopWindow model) ----------------------------------------
--
-- KEYS[k] is the client's result hash and KEYS[k+1 .. k+W+1] its day buckets of days
-- D-W+1 .. D+1 (D = today at "now"; an event may be up to a day ahead of the clock, so
-- tomorrow's bucket may exist). The result hash keeps, besides the answer, the window's
-- counters as of its day: <model>:s (counts), <model>:t (newest per gender) and <model>:w
-- ("D,W"), so that an apply on the same day adds its events to them instead of reading the W
-- buckets again. The answer is valid until the end of day D (<model>:u); lookups after that
-- recompute it from the buckets. It is kept while a bucket after D exists, even when the
-- window itself is empty.

-- Sum the buckets of days D-W+1 .. D (`flats`: day offset 1..W -> flat HGETALL reply, or nil to
-- read it). Returns counts, newest, or nil when a bucket holds something other than a hash.
local function window_sums(k, window, flats)
  local counts, newest = {}, {}
  for d = 1, window do
    local flat = flats and flats[d]
    if flat == nil then flat = read_hash('HGETALL', KEYS[k + d]) end
    if flat == nil then return nil end
    add_flat(flat, counts, newest)
  end
  return counts, newest
end

-- The fields of a windowed answer of `model` computed at day `today` with window `window`
-- from counts/newest; `ahead` tells whether a bucket after today exists. Returns the fields to
-- set (flat name/value list) and the fields to delete. Nothing to set: no answer at all.
local function window_fields(model, counts, newest, ahead, today, window, now)
  local best, scores, latest, newest_json = argmax(counts, newest)
  local all = {model, model .. ':s', model .. ':ts', model .. ':t', model .. ':at',
    model .. ':w', model .. ':u'}
  if best == nil and not ahead then return {}, all end
  local set = {model .. ':w', fmt(today) .. ',' .. fmt(window),
    model .. ':u', fmt((today + 1) * MS_PER_DAY)}
  if best == nil then return set, {all[1], all[2], all[3], all[4], all[5]} end
  local answer = {model, best, all[2], scores, all[3], latest, all[4], newest_json, all[5], now}
  for i = 1, 4 do answer[10 + i] = set[i] end
  return answer, {}
end

-- Write the windowed answer (see window_fields) into the result hash `result`.
local function store_window(result, model, counts, newest, ahead, today, window, now)
  local set, del = window_fields(model, counts, newest, ahead, today, window, now)
  if #del > 0 then redis.call('HDEL', result, unpack(del)) end
  if #set > 0 then redis.call('HSET', result, unpack(set)) end
end
