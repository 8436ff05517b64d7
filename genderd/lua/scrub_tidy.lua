-- The end of a pass of a shard's scrub (genderd/erasure/scrub.py), one page of its pending
-- clients at a time (the caller reads them with HSCAN): every client whose erasure this pass
-- completes (the pass it waits for is this one or an earlier one) leaves the scrub, and its
-- marker in this shard gets its lifetime: no entry it covers is left in the shard's streams.
-- A client erased again meanwhile waits for a later pass: it stays. With the last page the
-- pass ends; when no client waits any more, the shard's sentinel gets its lifetime too (it
-- outlives every marker of the shard, each given at most the same lifetime).
--
-- KEYS[1] = the shard's scrub        <prefix>:{sN}:scrub
-- KEYS[2] = clients being scrubbed   <prefix>:{sN}:scrub:clients
-- KEYS[3] = shard erasure sentinel   <prefix>:{sN}:erasures
-- KEYS[4..] = the erasure marker of each client of the page, in the order of ARGV[4..]
-- ARGV[1] = the pass's number;  ARGV[2] = the HSCAN cursor after this page ("0": the last)
-- ARGV[3] = the markers' lifetime (ms);  ARGV[4..] = the clients' scrub digests
-- returns: {the phase after this call ("tidy", or "" once the pass ended; "stale" when the
--           pass is not in its tidy: nothing done), clients that left the scrub}
-- uses:

local scrub, clients, sentinel = KEYS[1], KEYS[2], KEYS[3]
local pass, cursor, lifetime = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])

local state = redis.call('HMGET', scrub, 'pass', 'phase')
if tonumber(state[1]) ~= pass or state[2] ~= 'tidy' then return {'stale', 0} end

-- a lifetime of `lifetime` from now, unless the key lives as long already (or is gone)
local function give_lifetime(key)
  local ttl = redis.call('PTTL', key)
  if ttl == -1 or (ttl >= 0 and ttl < lifetime) then redis.call('PEXPIRE', key, lifetime) end
end

local left = 0
for a = 4, #ARGV do
  local raw = redis.call('HGET', clients, ARGV[a])
  local waits_for = raw and tonumber(string.match(raw, '^%S+ %S+ (%S+)'))
  if waits_for and waits_for <= pass then
    redis.call('HDEL', clients, ARGV[a])
    give_lifetime(KEYS[a])  -- KEYS[4] goes with ARGV[4]
    left = left + 1
  end
end

if cursor ~= '0' then
  redis.call('HSET', scrub, 'after', cursor)
  return {'tidy', left}
end
redis.call('HSET', scrub, 'phase', '', 'after', '-')
if redis.call('HLEN', clients) == 0 then give_lifetime(sentinel) end
return {'', left}
