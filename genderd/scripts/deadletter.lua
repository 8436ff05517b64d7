-- Dead-letter entries of one shard for one model, exactly once: each entry is acknowledged and
-- copied to the dead-letter stream in one step; an entry whose XACK returns 0 (already
-- acknowledged by an earlier call) is skipped.
--
-- KEYS[1] = shard stream          <prefix>:{sN}:events
-- KEYS[2] = dead-letter stream    <prefix>:{sN}:dead
-- KEYS[3] = shard stats hash      <prefix>:{sN}:stats
-- ARGV[1] = consumer group (the model name)
-- ARGV[2] = approximate cap on the dead-letter stream's length
-- ARGV[3..] = per entry: id, reason, detail, n (field count), then n original field/value pairs
-- returns: number of entries dead-lettered

local stream, dead, stats = KEYS[1], KEYS[2], KEYS[3]
local group, maxlen = ARGV[1], ARGV[2]

local done = 0
local i = 3
while i <= #ARGV do
  local id, reason, detail, n = ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3])
  local first, last = i + 4, i + 3 + 2 * n
  if redis.call('XACK', stream, group, id) == 1 then
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
    redis.call('XADD', dead, 'MAXLEN', '~', maxlen, '*', unpack(entry))
    done = done + 1
  end
  i = last + 1
end
if done > 0 then redis.call('HINCRBY', stats, group .. ':dead', done) end
return done
