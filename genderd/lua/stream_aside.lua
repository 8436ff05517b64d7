-- Set a shard's stream aside (`genderd stream set-aside`, docs/operations.md: a stream id in
-- the future), atomically: the stream is renamed to its aside key, which expires after the
-- retention, and a new, empty stream takes its place with every consumer group of the old
-- one (at id 0), so new entries get ids from now again. Refused (nothing done) while any
-- group has entries pending or not yet delivered: they would be lost with the old stream.
-- The shard's erasure sentinel (_erasure.lua) is set to 0-0, keeping its lifetime: every
-- entry of the new stream is written after every erasure so far, so no worker needs a marker
-- for it; the markers themselves, ids of the old stream, are re-based next
-- (markers_rebase.lua). Only an erasure after this call raises the sentinel again.
--
-- KEYS[1] = shard stream            <prefix>:{sN}:events
-- KEYS[2] = its aside key           <prefix>:{sN}:events:aside
-- KEYS[3] = shard erasure sentinel  <prefix>:{sN}:erasures
-- ARGV[1] = the aside stream's lifetime (ms; the retention)
-- returns: {"ok", the old stream's last id, the groups' names...}, or a refusal:
--          {"no_stream"}, {"aside_exists", its remaining lifetime in ms},
--          {"busy", group, pending, whether entries are undelivered (1/0)}

local stream, aside, sentinel, lifetime = KEYS[1], KEYS[2], KEYS[3], ARGV[1]

if redis.call('EXISTS', stream) == 0 then return {'no_stream'} end
if redis.call('EXISTS', aside) == 1 then return {'aside_exists', redis.call('PTTL', aside)} end

local last = '0-0'
local info = redis.call('XINFO', 'STREAM', stream)
for i = 1, #info, 2 do
  if info[i] == 'last-generated-id' then last = info[i + 1] end
end

local groups = {}
for _, group in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
  local name, pending, delivered = nil, 0, '0-0'
  for i = 1, #group, 2 do
    if group[i] == 'name' then name = group[i + 1] end
    if group[i] == 'pending' then pending = group[i + 1] end
    if group[i] == 'last-delivered-id' then delivered = group[i + 1] end
  end
  local undelivered = #redis.call('XRANGE', stream, '(' .. delivered, '+', 'COUNT', 1)
  if pending > 0 or undelivered > 0 then return {'busy', name, pending, undelivered} end
  groups[#groups + 1] = name
end

redis.call('RENAME', stream, aside)
redis.call('PEXPIRE', aside, lifetime)
for _, name in ipairs(groups) do
  redis.call('XGROUP', 'CREATE', stream, name, '0', 'MKSTREAM')
end
if redis.call('EXISTS', sentinel) == 1 then redis.call('SET', sentinel, '0-0', 'KEEPTTL') end

local reply = {'ok', last}
for _, name in ipairs(groups) do reply[#reply + 1] = name end
return reply
