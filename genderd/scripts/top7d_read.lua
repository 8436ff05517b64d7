-- Lookup of a client whose windowed answer (top7d, TopWindow models) is asked for, in one
-- round trip (cache-first): while the stored answer is valid (now < <model>:u) the result hash
-- is returned as stored; once the window has moved the answer is recomputed from the day
-- buckets and, unless told not to (a read replica refuses writes), written back with the
-- window's counters (see "windowed counters" in _lib.lua), so the answer served is right at
-- read time either way.
--
-- KEYS[1] = client result hash        <prefix>:{sN}:r:<cid>
-- KEYS[2 .. W+1] = buckets of days D-W+1 .. D   <prefix>:{sN}:m:<model>:d<day>:<cid>
-- KEYS[W+2] = bucket of day D+1        (D = today at "now")
-- ARGV[1] = model name;  ARGV[2] = read time "now" (ms)
-- ARGV[3] = "1": write the recomputed answer back; "0": compute it only (replicas)
-- ARGV[4] = G, the number of configured genders;  ARGV[5 .. 4+G] = their names, sorted
-- returns: the whole result hash (HGETALL, flat), the model's fields up to date

local result = KEYS[1]
local model, now, write_back = ARGV[1], ARGV[2], ARGV[3] ~= '0'
local window = #KEYS - 2

local stored = redis.call('HMGET', result, model .. ':u', model .. ':w')
if not (stored[1] and tonumber(now) >= tonumber(stored[1])) then
  return redis.call('HGETALL', result)
end
local today = math.floor(tonumber(now) / MS_PER_DAY)
local names, _, g = genders_at(4)
local fields = counter_fields(names, model .. ':n:', model .. ':t:', '')
local counts, newest = window_sums(1, window, counter_fields(names, '', '', ':t'), g)
if counts == nil then return redis.call('HGETALL', result) end  -- a bucket is not a hash
local ahead = redis.call('EXISTS', KEYS[window + 2]) == 1
if write_back then
  store_window(result, model, names, fields, counts, newest, ahead, today, window, now,
    stored[2], {})
  return redis.call('HGETALL', result)
end

-- Compute only: the stored hash with the model's fields as store_window would leave them.
local set, del = window_fields(model, names, fields, counts, newest, ahead, today, window, now,
  stored[2], {})
local flat = redis.call('HGETALL', result)
local hash, order = {}, {}
for i = 1, #flat, 2 do
  hash[flat[i]] = flat[i + 1]
  order[#order + 1] = flat[i]
end
for _, name in ipairs(del) do hash[name] = nil end
for i = 1, #set, 2 do
  if hash[set[i]] == nil then order[#order + 1] = set[i] end
  hash[set[i]] = set[i + 1]
end
local out = {}
for _, name in ipairs(order) do
  if hash[name] ~= nil then
    out[#out + 1] = name
    out[#out + 1] = hash[name]
  end
end
return out
