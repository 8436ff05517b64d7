-- Erase clients of one shard (SPEC 9), atomically: each gets an erasure marker holding the
-- last id of the shard stream now (its entries up to that id were written before the
-- erasure and are never applied: see _erasure.lua), the shard's sentinel is set to
-- live as long as the newest marker and to hold the greatest marker id of the shard (see
-- _erasure.lua), and every key of the client's data is deleted. Its
-- entries in the stream and in the dead letters are removed afterwards, in bounded steps
-- (erase_scan.lua); the marker covers them meanwhile.
--
-- KEYS[1] = shard stream            <prefix>:{sN}:events
-- KEYS[2] = shard erasure sentinel  <prefix>:{sN}:erasures
-- then per client c: its marker     <prefix>:{sN}:erased:<digest>, then its n_c data keys
-- ARGV[1] = the markers' lifetime (ms);  ARGV[1+c] = n_c
-- returns: per client, the marker's id and the number of keys deleted
-- uses: _basics.lua

local stream, sentinel, lifetime = KEYS[1], KEYS[2], ARGV[1]

local cutoff = '0-0'
if redis.call('EXISTS', stream) == 1 then
  local info = redis.call('XINFO', 'STREAM', stream)
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then cutoff = info[i + 1] end
  end
end
local known = redis.call('GET', sentinel)
redis.call('SET', sentinel, (known and id_after(known, cutoff)) and known or cutoff, 'PX', lifetime)

local reply, k = {}, 3
for c = 2, #ARGV do
  local n = tonumber(ARGV[c])
  redis.call('SET', KEYS[k], cutoff, 'PX', lifetime)
  local deleted = 0
  if n > 0 then deleted = redis.call('DEL', unpack(KEYS, k + 1, k + n)) end
  reply[#reply + 1] = cutoff
  reply[#reply + 1] = deleted
  k = k + 1 + n
end
return reply
