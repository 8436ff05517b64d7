-- Re-base the scrub's cutoffs of one shard after its stream was set aside (stream_aside.lua;
-- see markers_rebase.lua for the markers): a pending client whose stream cutoff is after the
-- new stream's last id holds an id of the old stream (one in the future), so the scrub would
-- delete the client's new entries as written before its erasure; the cutoff becomes 0-0
-- (every entry of the new stream was written after that erasure; the old ones are in the
-- stream set aside, which the scrub reads whole). So does the scrub's `upto:events`.
--
-- KEYS[1] = shard stream            <prefix>:{sN}:events
-- KEYS[2] = the shard's scrub       <prefix>:{sN}:scrub
-- KEYS[3] = clients being scrubbed  <prefix>:{sN}:scrub:clients
-- ARGV[1..] = scrub digests of pending clients (fields of KEYS[3])
-- returns: the number of cutoffs re-based
-- uses: _basics.lua

local stream, scrub, clients = KEYS[1], KEYS[2], KEYS[3]

local last = '0-0'
if redis.call('EXISTS', stream) == 1 then
  local info = redis.call('XINFO', 'STREAM', stream)
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then last = info[i + 1] end
  end
end

local upto = redis.call('HGET', scrub, 'upto:events')
if upto and id_after(upto, last) then redis.call('HSET', scrub, 'upto:events', last) end

local rebased = 0
for a = 1, #ARGV do
  local raw, cutoff, rest = redis.call('HGET', clients, ARGV[a]), nil, nil
  if raw then cutoff, rest = string.match(raw, '^(%S+) (.*)$') end
  if cutoff and id_after(cutoff, last) then
    redis.call('HSET', clients, ARGV[a], '0-0 ' .. rest)
    rebased = rebased + 1
  end
end
return rebased
