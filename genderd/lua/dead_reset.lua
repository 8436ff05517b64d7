-- One bounded step of resetting a model's dead letters before its replay: the replay applies
-- the retained stream again and dead-letters again what still fails, so the model's dead
-- letters whose original entry is still in the shard stream are deleted (else they would
-- stand twice), and those whose entry is gone (trimmed past the retention) are kept and
-- counted again in <model>:dead, which the replay reset: `status` and `genderd dead` agree.
--
-- KEYS[1] = shard stream          <prefix>:{sN}:events
-- KEYS[2] = dead-letter stream    <prefix>:{sN}:dead
-- KEYS[3] = shard stats hash      <prefix>:{sN}:stats
-- ARGV[1] = the model's name;  ARGV[2] = scan after this id ("-": from the start)
-- ARGV[3] = COUNT (dead letters read per step)
-- returns: {the last id read, or "" when done; dead letters deleted; dead letters kept}

local stream, dead, stats = KEYS[1], KEYS[2], KEYS[3]
local model, after, count = ARGV[1], ARGV[2], tonumber(ARGV[3])

local start = after == '-' and '-' or '(' .. after
local entries = redis.call('XRANGE', dead, start, '+', 'COUNT', count)
local doomed, kept = {}, 0
for _, entry in ipairs(entries) do
  local fields, owner, id = entry[2], nil, nil
  for f = 1, #fields, 2 do
    if fields[f] == '_model' then owner = fields[f + 1] end
    if fields[f] == '_id' then id = fields[f + 1] end
  end
  if owner == model then
    local retained = id and string.match(id, '^%d+%-%d+$')
      and #redis.call('XRANGE', stream, id, id) == 1
    if retained then doomed[#doomed + 1] = entry[1] else kept = kept + 1 end
  end
end
if #doomed > 0 then redis.call('XDEL', dead, unpack(doomed)) end
if kept > 0 then redis.call('HINCRBY', stats, model .. ':dead', kept) end
return {#entries < count and '' or entries[#entries][1], #doomed, kept}
