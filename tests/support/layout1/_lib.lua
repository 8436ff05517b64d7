-- Shared helpers, prepended by the loader to the scripts that name it (Redis scripts cannot
-- import). Defines no entry point; touches only keys its callers pass in.
--
-- Counter hashes (``top`` state, ``top7d`` day buckets) hold, per gender g:
--   g       number of events
--   g:t     greatest event ts (ms) among them
-- Numbers are formatted with %d: Lua 5.1's tostring() prints 1.7e+12 for milliseconds.

local MS_PER_DAY = 86400000

-- Entries whose keys hold something other than a hash cannot be applied. They are found
-- before any write, because Redis does not roll back a script that fails halfway: such an
-- entry is left unacknowledged (pending), retried, and dead-lettered after max_deliveries.
local function wrong_type(first, last)
  for k = first, last do
    local kind = redis.call('TYPE', KEYS[k])['ok']
    if kind ~= 'hash' and kind ~= 'none' then return true end
  end
  return false
end

local function fmt(n)
  return string.format('%d', n)
end

-- Count one event of `gender` at `ts` in the counter hash `key`.
local function count_event(key, gender, ts)
  redis.call('HINCRBY', key, gender, 1)
  local field = gender .. ':t'
  local newest = tonumber(redis.call('HGET', key, field))
  if newest == nil or ts > newest then
    redis.call('HSET', key, field, fmt(ts))
  end
end

-- Add the counter hash `key` into the tables counts[g] and newest[g].
local function add_counts(key, counts, newest)
  local flat = redis.call('HGETALL', key)
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

-- The answer for per-gender counts: most events; ties to the newest event, then the
-- alphabetically smallest name. Returns gender, scores JSON, newest ts (all strings) or nil.
local function argmax(counts, newest)
  local names = {}
  for gender, n in pairs(counts) do
    if n > 0 then names[#names + 1] = gender end
  end
  if #names == 0 then return nil end
  table.sort(names)
  local best, latest, parts = nil, nil, {}
  for i, gender in ipairs(names) do
    local n, t = counts[gender], newest[gender] or 0
    if best == nil or n > counts[best] or (n == counts[best] and t > (newest[best] or 0)) then
      best = gender
    end
    if latest == nil or t > latest then latest = t end
    -- gender names are validated ([a-z][a-z0-9_-]*): no JSON escaping needed
    parts[i] = '"' .. gender .. '":' .. fmt(n)
  end
  return best, '{' .. table.concat(parts, ',') .. '}', fmt(latest)
end

-- Write a model's answer into the client's result hash, only the fields that change.
-- parts: array of {suffix, value or false}; suffix '' is the gender field `<model>`, others
-- are `<model>:<suffix>`; false removes the field. `<model>:at` (as-of) is written with any
-- change and removed with the gender. Returns true when the hash changed.
local function store(result, model, parts, now)
  local names = {}
  for i, part in ipairs(parts) do
    names[i] = (part[1] == '' and model) or (model .. ':' .. part[1])
  end
  local have = redis.call('HMGET', result, unpack(names))
  local set, del = {}, {}
  for i, part in ipairs(parts) do
    if part[2] then
      if have[i] ~= part[2] then
        set[#set + 1] = names[i]
        set[#set + 1] = part[2]
      end
    elseif have[i] then
      del[#del + 1] = names[i]
    end
  end
  if #del > 0 then
    if not parts[1][2] then del[#del + 1] = model .. ':at' end
    redis.call('HDEL', result, unpack(del))
  end
  if #set > 0 then
    set[#set + 1] = model .. ':at'
    set[#set + 1] = now
    redis.call('HSET', result, unpack(set))
  end
  return #set > 0 or #del > 0
end

-- The parts of a windowed answer (for store) at processing or read time `now` (a number):
-- KEYS[first .. first+window-1] are the client's day buckets of the window's days, oldest
-- first, and KEYS[first+window] is tomorrow's bucket, which events up to max_future ahead of
-- the clock may have created. The answer is valid until the end of today (`u`); it is kept
-- while tomorrow's bucket exists even when the window itself is empty.
local function window_parts(first, window, now)
  local counts, newest = {}, {}
  for k = first, first + window - 1 do add_counts(KEYS[k], counts, newest) end
  local best, scores, latest = argmax(counts, newest)
  local valid_until = false
  if best or redis.call('EXISTS', KEYS[first + window]) == 1 then
    valid_until = fmt((math.floor(now / MS_PER_DAY) + 1) * MS_PER_DAY)
  end
  return {{'', best or false}, {'s', scores or false}, {'ts', latest or false}, {'u', valid_until}}
end
