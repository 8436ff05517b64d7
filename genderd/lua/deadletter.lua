-- Dead-letter entries of one shard for one model, exactly once: each entry is acknowledged and
-- copied to the dead-letter stream in one step; an entry whose XACK returns 0 (already
-- acknowledged by an earlier call) is skipped. An entry of an erased client written before the
-- erasure (_erasure.lua) is acknowledged and not copied: no dead letter holds it.
--
-- The dead-letter stream is capped: once it holds more than the cap, its oldest dead letters
-- are deleted in the same call (at most the entries added plus TRIM_SLACK per call, so a call
-- stays bounded) and the <model>:dead counter of the model that wrote each goes down with
-- them, so `genderd status` and `genderd dead` agree. (XADD's own MAXLEN trimming would drop
-- them without saying whose they were.)
--
-- KEYS[1] = shard stream          <prefix>:{sN}:events
-- KEYS[2] = dead-letter stream    <prefix>:{sN}:dead
-- KEYS[3] = shard stats hash      <prefix>:{sN}:stats
-- KEYS[4] = shard erasure sentinel  <prefix>:{sN}:erasures
-- KEYS[5..] = erasure markers of the entries' clients  <prefix>:{sN}:erased:<digest>
-- ARGV[1] = consumer group (the model name)
-- ARGV[2] = cap on the dead-letter stream's length
-- ARGV[3..] = per entry: id, reason, detail, the index in KEYS of its client's marker (0: the
--             entry names no client), n (field count), then n original field/value pairs
-- returns: {entries dead-lettered, then the ids of the entries dropped as erased}
-- uses: _basics.lua _erasure.lua _deadcount.lua

local TRIM_SLACK = 1000  -- dead letters over the cap deleted per call beyond those added

local stream, dead, stats = KEYS[1], KEYS[2], KEYS[3]
local group, maxlen = ARGV[1], ARGV[2]
local sentinel = redis.call('EXISTS', KEYS[4]) == 1

local done, erased = 0, {}
local i = 3
while i <= #ARGV do
  local id, reason, detail = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local marker, n = tonumber(ARGV[i + 3]), tonumber(ARGV[i + 4])
  local first, last = i + 5, i + 4 + 2 * n
  if redis.call('XACK', stream, group, id) == 1 then
    local cutoff = marker > 0 and erased_up_to(sentinel, KEYS[marker])
    if cutoff and not id_after(id, cutoff) then
      erased[#erased + 1] = id
    else
      local entry = {}
      for j = first, last do entry[#entry + 1] = ARGV[j] end
      entry[#entry + 1] = '_id'
      entry[#entry + 1] = id
      entry[#entry + 1] = '_model'
      entry[#entry + 1] = group
      entry[#entry + 1] = '_reason'
      entry[#entry + 1] = reason
      entry[#entry + 1] = '_detail'
      entry[#entry + 1] = detail
      redis.call('XADD', dead, '*', unpack(entry))
      done = done + 1
    end
  end
  i = last + 1
end
if done > 0 then
  redis.call('HINCRBY', stats, group .. ':dead', done)
  local excess = redis.call('XLEN', dead) - tonumber(maxlen)
  if excess > 0 then
    local oldest = redis.call('XRANGE', dead, '-', '+', 'COUNT', math.min(excess, done + TRIM_SLACK))
    local ids = {}
    for _, row in ipairs(oldest) do ids[#ids + 1] = row[1] end
    redis.call('XDEL', dead, unpack(ids))
    lower_dead_counts(stats, oldest)
  end
end
if #erased > 0 then redis.call('HINCRBY', stats, group .. ':erased', #erased) end
return {done, unpack(erased)}
