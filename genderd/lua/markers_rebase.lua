-- Re-base erasure markers of one shard after its stream was set aside (stream_aside.lua):
-- a marker whose id is after the new stream's last id holds an id of the old stream (one in
-- the future), so every entry of the new stream would look written before the erasure and
-- be dropped; it becomes 0-0, keeping its lifetime (every entry of the new stream was written
-- after that erasure). A marker set by an erasure after the set-aside holds an id of the new
-- stream, not after its last id: left as it is. Markers already gone are skipped.
--
-- KEYS[1] = shard stream     <prefix>:{sN}:events
-- KEYS[2..] = erasure markers of the shard   <prefix>:{sN}:erased:<digest>
-- returns: the number of markers re-based
-- uses: _basics.lua

local last = '0-0'
if redis.call('EXISTS', KEYS[1]) == 1 then
  local info = redis.call('XINFO', 'STREAM', KEYS[1])
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then last = info[i + 1] end
  end
end

local rebased = 0
for k = 2, #KEYS do
  local cutoff = redis.call('GET', KEYS[k])
  if cutoff and id_after(cutoff, last) then
    redis.call('SET', KEYS[k], '0-0', 'KEEPTTL')
    rebased = rebased + 1
  end
end
return rebased
