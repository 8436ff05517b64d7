-- Lookup of a client whose `top7d` answer is asked for, in one round trip (cache-first):
-- while the stored answer is valid (now < <model>:u) the result hash is returned as stored;
-- once the window has moved the answer is recomputed from the day buckets and written back,
-- so the answer served is right at read time.
--
-- KEYS[1] = client result hash        <prefix>:{sN}:r:<cid>
-- KEYS[2 .. W+1] = buckets of days D-W+1 .. D   <prefix>:{sN}:m:top7d:d<day>:<cid>
-- KEYS[W+2] = bucket of day D+1        (D = today at "now")
-- ARGV[1] = model name;  ARGV[2] = read time "now" (ms)
-- returns: the whole result hash (HGETALL, flat), the model's fields up to date

local result = KEYS[1]
local model, now = ARGV[1], ARGV[2]

local valid_until = redis.call('HGET', result, model .. ':u')
if valid_until and tonumber(now) >= tonumber(valid_until) then
  store(result, model, window_parts(2, #KEYS - 2, tonumber(now)), now)
end
return redis.call('HGETALL', result)
