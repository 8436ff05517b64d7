-- Lookup of a client whose windowed answer (top7d, TopWindow models) is asked for, in one
-- round trip (cache-first): while the stored answer is valid (now < <model>:u) the result hash
-- is returned as stored; once the window has moved the answer is recomputed from the day
-- buckets and, unless told not to (a read replica refuses writes), written back with the
-- window's counters (see "windowed counters" in _window.lua), so the answer served is right at
-- read time either way.
--
-- KEYS[1] = client result hash        <prefix>:{sN}:r:<cid>
-- KEYS[2 .. W+1] = buckets of days D-W+1 .. D   <prefix>:{sN}:m:<model>:d<day>:<cid>
-- KEYS[W+2] = bucket of day D+1        (D = today at "now")
-- ARGV[1] = model name;  ARGV[2] = read time "now" (ms)
-- ARGV[3] = "1": write the recomputed answer back; "0": compute it only (replicas)
-- ARGV[4] = G, the number of configured genders;  ARGV[5 .. 4+G] = their names, sorted
-- ARGV[5+G .. #ARGV-2] = the result-hash fields to return;  ARGV[#ARGV-1] = <model>:u,
-- ARGV[#ARGV] = <model>:w (read with them, not returned)
-- returns: the values of those fields (HMGET), the model's up to date
--
-- The chunks this script uses are inserted at the "uses here" line below, after the fast
-- path: a lookup whose stored answer is valid (nearly all of them) returns before it, without
-- running the chunks' definitions (about 6 µs of the server's time per call, measured), after
-- one HMGET whose reply is returned as it is, less its last two values. The code after that
-- line reads the fast path's locals (result, model, now, write_back, window, g, stored, n,
-- stored_w); no chunk defines a name of them.
-- uses: _basics.lua _counters.lua _window.lua

local result = KEYS[1]
local model, now, write_back = ARGV[1], ARGV[2], ARGV[3] ~= '0'
local window = #KEYS - 2
local g = tonumber(ARGV[4])
local stored = redis.call('HMGET', result, unpack(ARGV, 5 + g))
local n = #ARGV - 4 - g  -- values: the wanted fields', then :u and :w
local valid_until, stored_w = stored[n - 1], stored[n]
if not (valid_until and tonumber(now) >= tonumber(valid_until)) then
  stored[n], stored[n - 1] = nil, nil  -- a reply ends at its first nil
  return stored  -- the wanted fields, as stored
end

-- uses here: the chunks named on top are inserted at this line.

-- The stored answer is no longer valid: the window is summed from the day buckets again.
local wanted = {unpack(ARGV, 5 + g, #ARGV - 2)}
local today = math.floor(tonumber(now) / MS_PER_DAY)
local names = genders_at(4)
local fields = counter_fields(names, model .. ':n:', model .. ':t:', '')
local sums = window_sums(1, window, counter_fields(names, '', '', ':t'), g)
if sums == nil then return redis.call('HMGET', result, unpack(wanted)) end  -- not a hash
local ahead = redis.call('EXISTS', KEYS[window + 2]) == 1
if write_back then
  store_window(result, model, names, fields, sums, 1, ahead, today, window, now, stored_w, {})
  return redis.call('HMGET', result, unpack(wanted))
end

-- Compute only: the stored hash with the model's fields as store_window would leave them.
local set, del = window_fields(model, names, fields, sums, 1, ahead, today, window, now,
  stored_w, {})
local changed = {}
for _, name in ipairs(del) do changed[name] = false end
for i = 1, #set, 2 do changed[set[i]] = set[i + 1] end
stored[n], stored[n - 1] = nil, nil
for i, name in ipairs(wanted) do
  if changed[name] ~= nil then stored[i] = changed[name] end
end
return stored
