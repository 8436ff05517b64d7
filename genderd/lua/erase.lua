-- Mark clients erased in one shard (SPEC 9), atomically, delete the keys of their data that
-- live there, and hand them to the shard's scrub. Every shard marks every erased client (see
-- genderd/erasure/__init__.py): in the client's own shard with its data keys, in the others
-- with none (an entry of the client written to the wrong shard's stream belongs to that
-- stream's ids). Each client gets an erasure marker holding the last id of this shard's
-- stream now: its entries in this stream up to that id were written before the erasure and
-- are never applied, dead-lettered or re-driven (_erasure.lua). The marker and the shard's
-- sentinel (the greatest marker id of the shard) do not expire while the scrub still has to
-- delete the client's entries: the scrub gives them their lifetime when it is done
-- (scrub_tidy.lua), so a marker always outlives the entries it covers.
--
-- The scrub (scrub_step.lua) deletes, in bounded steps shared by every pending erasure, the
-- client's entries of this shard's stream up to the marker's id, of the stream set aside if
-- any, and its dead letters up to the dead-letter stream's last id now (no dead letter of an
-- entry written before the erasure can be added after this call: deadletter.lua reads the
-- marker). A client joins the scrub's next pass: the pass after the one running now, if any.
--
-- KEYS[1] = shard stream            <prefix>:{sN}:events
-- KEYS[2] = shard erasure sentinel  <prefix>:{sN}:erasures
-- KEYS[3] = dead-letter stream      <prefix>:{sN}:dead
-- KEYS[4] = the shard's scrub       <prefix>:{sN}:scrub
-- KEYS[5] = clients being scrubbed  <prefix>:{sN}:scrub:clients
-- KEYS[6] = erasures being scrubbed <prefix>:{sN}:scrub:erasures
-- then per client c: its marker     <prefix>:{sN}:erased:<digest>, then its n_c data keys
-- ARGV[1] = the erasure's id
-- then per client c: n_c, its scrub digest (SHA-1 of the id), its digest (of its marker)
-- returns: {the markers' id (the stream's last id, "0-0" for no stream), the dead-letter
--           stream's last id ("0-0" for none), the scrub pass that completes the erasure
--           here, then per client the number of keys deleted}
-- uses: _basics.lua

local stream, sentinel, dead = KEYS[1], KEYS[2], KEYS[3]
local scrub, clients, erasures = KEYS[4], KEYS[5], KEYS[6]
local erasure = ARGV[1]

expect_type(stream, 'stream')
expect_type(sentinel, 'string')
expect_type(dead, 'stream')
expect_type(scrub, 'hash')
expect_type(clients, 'hash')
expect_type(erasures, 'zset')

local function last_id(key)
  if redis.call('EXISTS', key) == 0 then return '0-0' end
  local info = redis.call('XINFO', 'STREAM', key)
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then return info[i + 1] end
  end
  return '0-0'
end

-- the later of two stream ids (either may be absent)
local function later(a, b)
  if not a then return b end
  return id_after(a, b) and a or b
end

local cutoff, dead_cutoff = last_id(stream), last_id(dead)
-- no expiry while the scrub runs: scrub_tidy.lua gives it one once the shard's scrub is done
redis.call('SET', sentinel, later(redis.call('GET', sentinel) or nil, cutoff))

local state = redis.call('HMGET', scrub, 'pass', 'upto:events', 'upto:dead')
local target = (tonumber(state[1]) or 0) + 1  -- the next pass: it starts after this call
redis.call('HSET', scrub, 'upto:events', later(state[2] or nil, cutoff),
  'upto:dead', later(state[3] or nil, dead_cutoff))
redis.call('ZADD', erasures, 'GT', target, erasure)

local reply, k, a = {cutoff, dead_cutoff, target}, 7, 2
while a <= #ARGV do
  local n, scrub_digest, digest = tonumber(ARGV[a]), ARGV[a + 1], ARGV[a + 2]
  redis.call('SET', KEYS[k], cutoff)  -- no expiry either: see the sentinel
  local deleted = 0
  if n > 0 then deleted = redis.call('DEL', unpack(KEYS, k + 1, k + n)) end
  redis.call('HSET', clients, scrub_digest,
    table.concat({cutoff, dead_cutoff, target, erasure, digest}, ' '))
  reply[#reply + 1] = deleted
  k, a = k + 1 + n, a + 3
end
return reply
