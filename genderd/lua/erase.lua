-- Mark clients erased in one shard (SPEC 9), atomically, and delete the keys of their data
-- that live there. Every shard marks every erased client (see genderd/erasure.py): in the
-- client's own shard with its data keys, in the others with none (an entry of the client
-- written to the wrong shard's stream belongs to that stream's ids). Each client gets an
-- erasure marker holding the last id of this shard's stream now (its entries in this stream
-- up to that id were written before the erasure and are never applied, dead-lettered or
-- re-driven: see _erasure.lua); the shard's sentinel is set to live as long as the newest
-- marker and to hold the greatest marker id of the shard. The reply also gives the last id
-- of the shard's dead-letter stream now: every dead letter of the client up to it is deleted
-- afterwards, with its entries in the stream, in bounded steps (erase_scan.lua); the markers
-- cover them meanwhile, and no dead letter of an entry written before the erasure can be
-- added after this call (deadletter.lua reads the marker).
--
-- KEYS[1] = shard stream            <prefix>:{sN}:events
-- KEYS[2] = shard erasure sentinel  <prefix>:{sN}:erasures
-- KEYS[3] = dead-letter stream      <prefix>:{sN}:dead
-- then per client c: its marker     <prefix>:{sN}:erased:<digest>, then its n_c data keys
-- ARGV[1] = the markers' lifetime (ms);  ARGV[1+c] = n_c
-- returns: {the markers' id (the stream's last id, "0-0" for no stream), the dead-letter
--           stream's last id ("0-0" for none), then per client the number of keys deleted}
-- uses: _basics.lua

local stream, sentinel, dead, lifetime = KEYS[1], KEYS[2], KEYS[3], ARGV[1]

local function last_id(key)
  if redis.call('EXISTS', key) == 0 then return '0-0' end
  local info = redis.call('XINFO', 'STREAM', key)
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then return info[i + 1] end
  end
  return '0-0'
end

local cutoff = last_id(stream)
local known = redis.call('GET', sentinel)
redis.call('SET', sentinel, (known and id_after(known, cutoff)) and known or cutoff, 'PX', lifetime)

local reply, k = {cutoff, last_id(dead)}, 4
for c = 2, #ARGV do
  local n = tonumber(ARGV[c])
  redis.call('SET', KEYS[k], cutoff, 'PX', lifetime)
  local deleted = 0
  if n > 0 then deleted = redis.call('DEL', unpack(KEYS, k + 1, k + n)) end
  reply[#reply + 1] = deleted
  k = k + 1 + n
end
return reply
