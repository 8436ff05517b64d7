-- Give a client written before client expiry existed (SPEC 10; no :expires field in its result
-- hash) the expiry the apply scripts would have given it: the end of the UTC day TTL days
-- after its latest applied event, taken as the greatest of its models' as-of (:at) fields. A
-- client inactive for longer than that is gone at once (an expiry in the past deletes the key).
-- Its layout-1 counters (top's, when an upgrade left them) get the same expiry.
--
-- KEYS[1] = the client's result hash        <prefix>:{sN}:r:<cid>
-- KEYS[2] = its layout-1 counters of top    <prefix>:{sN}:m:top:<cid>
-- ARGV[1] = the TTL in days (> 0);  ARGV[2..] = the :at fields of every model
-- returns: 1 expiry set, 2 set in the past (the client is gone), 0 nothing to do (it has an
--          expiry already, holds no :at field, or is not a hash)
-- uses: _basics.lua _expiry.lua

local result, layout1, ttl = KEYS[1], KEYS[2], tonumber(ARGV[1])
local fields = {EXPIRES}
for i = 2, #ARGV do fields[#fields + 1] = ARGV[i] end
local stored = read_hash('HMGET', result, unpack(fields))
if stored == nil or stored[1] then return 0 end
local latest = nil
for i = 2, #stored do
  local at = tonumber(stored[i])
  if at and (latest == nil or at > latest) then latest = at end
end
if latest == nil then return 0 end
local expires = (math.floor(latest / MS_PER_DAY) + ttl + 1) * MS_PER_DAY
local now = redis.call('TIME')
local past = expires <= tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('HSET', result, EXPIRES, fmt(expires))
redis.call('PEXPIREAT', result, fmt(expires))
if redis.call('EXISTS', layout1) == 1 then redis.call('PEXPIREAT', layout1, fmt(expires)) end
return past and 2 or 1
