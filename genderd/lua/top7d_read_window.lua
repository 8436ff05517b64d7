-- The rest of top7d_read.lua (its KEYS/ARGV contract is on top of that file), after the
-- shared chunk (_lib.lua): the stored answer is no longer valid, so the window is summed from
-- the day buckets again. Uses the locals of top7d_read.lua (result, model, now, write_back,
-- window, g, stored, n, stored_w).

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
