-- Write one shard's part of an ingest request (POST /v1/events, the Python producer,
-- `genderd produce`): its events, and, when the request has an idempotency key, the record
-- that this part is written, in one atomic step. A repeat of the request (same key, same
-- body) finds the record and writes nothing; the same key with another body writes nothing
-- and says so. So whatever happens to an attempt (a crash, a timeout, a failover), each part
-- of a request with a key is written once or not at all.
--
-- Another body under the same key must be refused before any part of it is written: the key
-- has a claim, holding the body first written under it. On a standalone server it is KEYS[3],
-- checked and set by every part's call (all parts then go in one round trip; whichever part
-- runs first claims the key for its body). On Cluster a script cannot reach it from every
-- shard: the part of the key's home shard (see genderd/ingest.py) is sent alone first, and
-- its record is the claim. That part may hold no events (the home shard has none of the
-- request's): then only the record is set.
--
-- Every attempt that is not refused sets the part's record, and the claim, again: both live
-- the record's lifetime from the latest attempt, not the first, so that a part written by an
-- early attempt is not forgotten before the parts a later attempt wrote.
--
-- KEYS[1] = shard stream                       <prefix>:{sN}:events
-- KEYS[2] = the request's record on the shard  <prefix>:{sN}:idem:<key digest>  (keyed only)
-- KEYS[3] = the key's claim                    <prefix>:idem:<key digest>  (standalone only)
-- ARGV[1] = digest of the request's body ('' without a key)
-- ARGV[2] = the record's lifetime (ms)
-- ARGV[3..] = cid, gender, ts of each event of the part (none: the claim alone)
-- returns: the number of entries added, 0 when the part was written before (same body), -1
-- when the key's record holds another body (nothing written); an error reply starting with
-- WRONGTYPE that names the key when the stream or the record is not of its type (nothing
-- written)
-- uses: _basics.lua

local stream, record, claim = KEYS[1], KEYS[2], KEYS[3]
local body, ttl = ARGV[1], ARGV[2]

if claim then
  local owner = redis.pcall('GET', claim)
  if type(owner) == 'table' and owner.err then
    return wrong_type(claim, 'string')
  end
  if owner and owner ~= body then return -1 end
end
local seen = false
if record then
  seen = redis.pcall('GET', record)
  if type(seen) == 'table' and seen.err then
    return wrong_type(record, 'string')
  end
  if seen and seen ~= body then return -1 end
end

local added = 0
if not seen and #ARGV >= 5 then
  -- the first entry through pcall: a stream key holding another type refuses the whole part
  local first = redis.pcall('XADD', stream, '*', 'cid', ARGV[3], 'gender', ARGV[4], 'ts', ARGV[5])
  if type(first) == 'table' and first.err then
    if string.find(first.err, 'WRONGTYPE', 1, true) then
      return wrong_type(stream, 'stream')
    end
    return first
  end
  added = 1
  for i = 6, #ARGV, 3 do
    redis.call('XADD', stream, '*', 'cid', ARGV[i], 'gender', ARGV[i + 1], 'ts', ARGV[i + 2])
    added = added + 1
  end
end
if record then
  redis.call('SET', record, body, 'PX', ttl)
end
if claim then
  redis.call('SET', claim, body, 'PX', ttl)
end
return added
