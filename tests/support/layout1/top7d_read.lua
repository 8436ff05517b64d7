-- Lookup of a client whose `top7d` answer is asked for, in one round trip (cache-first):
-- while the stored answer is valid (now < <model>:u) the result hash is returned as stored;
-- once the window has moved the answer is recomputed from the day buckets and, unless told
-- not to (a read replica refuses writes), written back, so the answer served is right at
-- read time either way.
--
-- KEYS[1] = client result hash        <prefix>:{sN}:r:<cid>
-- KEYS[2 .. W+1] = buckets of days D-W+1 .. D   <prefix>:{sN}:m:top7d:d<day>:<cid>
-- KEYS[W+2] = bucket of day D+1        (D = today at "now")
-- ARGV[1] = model name;  ARGV[2] = read time "now" (ms)
-- ARGV[3] = "1": write the recomputed answer back; "0": compute it only (replicas)
-- returns: the whole result hash (HGETALL, flat), the model's fields up to date

local result = KEYS[1]
local model, now, write_back = ARGV[1], ARGV[2], ARGV[3] ~= '0'

local valid_until = redis.call('HGET', result, model .. ':u')
if not (valid_until and tonumber(now) >= tonumber(valid_until)) then
  return redis.call('HGETALL', result)
end
local parts = window_parts(2, #KEYS - 2, tonumber(now))
if write_back then
  store(result, model, parts, now)
  return redis.call('HGETALL', result)
end

-- Compute only: the stored hash with the model's fields as `store` would leave them.
local flat = redis.call('HGETALL', result)
local fields, order = {}, {}
for i = 1, #flat, 2 do
  fields[flat[i]] = flat[i + 1]
  order[#order + 1] = flat[i]
end
local changed = false
for _, part in ipairs(parts) do
  local name = (part[1] == '' and model) or (model .. ':' .. part[1])
  if fields[name] ~= (part[2] or nil) then
    changed = true
    if fields[name] == nil then order[#order + 1] = name end
    fields[name] = part[2] or nil
  end
end
if changed then
  if parts[1][2] then
    if fields[model .. ':at'] == nil then order[#order + 1] = model .. ':at' end
    fields[model .. ':at'] = now
  else
    fields[model .. ':at'] = nil
  end
end
local out = {}
for _, name in ipairs(order) do
  if fields[name] ~= nil then
    out[#out + 1] = name
    out[#out + 1] = fields[name]
  end
end
return out
