-- One bounded step of a shard's scrub (SPEC 9; genderd/erasure/scrub.py): read at most COUNT
-- entries of one of the shard's streams and delete those of the clients erased and not yet
-- scrubbed, so that the server is never held up for more than about a millisecond. One pass
-- serves every client pending in the shard (erase.lua adds them, scrub_tidy.lua removes those
-- the pass completes): the shard's stream up to `upto:events` (the greatest marker id given
-- so far), the stream set aside by `genderd stream set-aside` if any, then the dead-letter
-- stream up to `upto:dead`; then the pass's tidy (scrub_tidy.lua, driven from Python). A pass
-- starts when none runs and a client waits.
--
-- An entry is the client's when a cid field of it (any of them, when the field is given
-- twice) names a pending client, matched by its scrub digest (redis.sha1hex of the id: the
-- hash holds no id). It is deleted when it was written before the client's erasure: its id is
-- not after the client's cutoff in that stream (the stream's or the dead-letter stream's last
-- id when the client was marked in this shard; everything set aside precedes every pending
-- erasure's scrub). Entries written after the erasure are new data: kept. What each erasure's
-- scrub deleted is counted in the scrub's hash (<erasure id>:entries, :dead_letters), and the
-- dead letters deleted lower their models' <model>:dead counters (`status` and `dead` agree).
--
-- KEYS[1] = shard stream            <prefix>:{sN}:events
-- KEYS[2] = its stream set aside    <prefix>:{sN}:events:aside
-- KEYS[3] = dead-letter stream      <prefix>:{sN}:dead
-- KEYS[4] = shard stats hash        <prefix>:{sN}:stats
-- KEYS[5] = the shard's scrub       <prefix>:{sN}:scrub
-- KEYS[6] = clients being scrubbed  <prefix>:{sN}:scrub:clients
-- KEYS[7] = erasures being scrubbed <prefix>:{sN}:scrub:erasures
-- ARGV[1] = COUNT: entries read at most;  ARGV[2] = "peek": change nothing, only say whether
--           there is work ("start" for a pass that would start)
-- returns: {the phase after the step ("" when no pass runs), the pass's number, entries read
--           in the pass so far, entries deleted by this step, the lowest pass number an
--           erasure of the shard waits for ("" for none)}
-- uses: _basics.lua

local streams = {events = KEYS[1], aside = KEYS[2], dead = KEYS[3]}
local stats, scrub, clients, erasures = KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local count, peek = tonumber(ARGV[1]), ARGV[2] == 'peek'
local NEXT = {events = 'aside', aside = 'dead', dead = 'tidy'}
local FEW = 256  -- pending clients read whole per step up to this many

expect_type(scrub, 'hash')
expect_type(clients, 'hash')
expect_type(erasures, 'zset')

local function lowest_waiting()
  local first = redis.call('ZRANGE', erasures, 0, 0, 'WITHSCORES')
  return first[2] or ''
end

local state = redis.call('HMGET', scrub, 'pass', 'phase', 'after', 'read')
local pass, phase = tonumber(state[1]) or 0, state[2] or ''
local after, read = state[3] or '-', tonumber(state[4]) or 0
if phase == '' then
  local waiting = lowest_waiting()
  if redis.call('HLEN', clients) == 0 and (waiting == '' or tonumber(waiting) <= pass) then
    return {'', pass, read, 0, waiting}
  end
  if peek then return {'start', pass, read, 0, waiting} end
  pass, phase, after, read = pass + 1, 'events', '-', 0
  redis.call('HSET', scrub, 'pass', pass, 'phase', phase, 'after', after, 'read', read)
end
if peek or phase == 'tidy' then return {phase, pass, read, 0, lowest_waiting()} end

local stream = streams[phase]
expect_type(stream, 'stream')
local upto = phase == 'aside' and '+' or (redis.call('HGET', scrub, 'upto:' .. phase) or '0-0')
local entries = redis.call('XRANGE', stream, after == '-' and '-' or '(' .. after, upto,
  'COUNT', count)

-- the pending clients, read whole when they are few (one HGETALL instead of an HGET per id)
local few = nil
if redis.call('HLEN', clients) <= FEW then
  few = {}
  local flat = redis.call('HGETALL', clients)
  for i = 1, #flat, 2 do few[flat[i]] = flat[i + 1] end
end

-- the pending record of a client id, or nil
local function pending_of(cid)
  local scrub_digest = redis.sha1hex(cid)
  if few then return few[scrub_digest] end
  return redis.call('HGET', clients, scrub_digest) or nil
end

local doomed, per_erasure, per_model = {}, {}, {}
for _, entry in ipairs(entries) do
  local fields, found, model = entry[2], nil, nil
  for f = 1, #fields, 2 do
    if fields[f] == 'cid' and not found then found = pending_of(fields[f + 1]) end
    if fields[f] == '_model' then model = fields[f + 1] end
  end
  if found then
    local events, dead, _, erasure = string.match(found, '^(%S+) (%S+) (%S+) (%S+)')
    local cutoff = phase == 'dead' and dead or events
    if phase == 'aside' or not id_after(entry[1], cutoff) then
      doomed[#doomed + 1] = entry[1]
      per_erasure[erasure] = (per_erasure[erasure] or 0) + 1
      if model and phase == 'dead' then per_model[model] = (per_model[model] or 0) + 1 end
    end
  end
end
if #doomed > 0 then redis.call('XDEL', stream, unpack(doomed)) end
local kind = phase == 'dead' and ':dead_letters' or ':entries'
for erasure, n in pairs(per_erasure) do redis.call('HINCRBY', scrub, erasure .. kind, n) end
for model, n in pairs(per_model) do redis.call('HINCRBY', stats, model .. ':dead', -n) end

read = read + #entries
if #entries < count then
  phase, after = NEXT[phase], phase == 'dead' and '0' or '-'  -- the tidy's HSCAN cursor
else
  after = entries[#entries][1]
end
redis.call('HSET', scrub, 'phase', phase, 'after', after, 'read', read)
return {phase, pass, read, #doomed, lowest_waiting()}
