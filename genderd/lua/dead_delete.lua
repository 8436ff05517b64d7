-- Delete dead letters of one shard, atomically with lowering the <model>:dead counter of the
-- model that wrote each (`genderd dead purge`, and `genderd dead redrive` once an entry is
-- written again), so that `genderd status` and `genderd dead` agree. A dead letter already
-- gone (purged, re-driven, erased or trimmed meanwhile) is skipped: counted once.
--
-- KEYS[1] = dead-letter stream    <prefix>:{sN}:dead
-- KEYS[2] = shard stats hash      <prefix>:{sN}:stats
-- ARGV[1..] = the dead letters' ids
-- returns: the number of dead letters deleted

local dead, stats = KEYS[1], KEYS[2]

local per_model, doomed = {}, {}
for a = 1, #ARGV do
  local rows = redis.call('XRANGE', dead, ARGV[a], ARGV[a])
  if #rows == 1 then
    doomed[#doomed + 1] = ARGV[a]
    local fields = rows[1][2]
    for f = 1, #fields, 2 do
      if fields[f] == '_model' then
        per_model[fields[f + 1]] = (per_model[fields[f + 1]] or 0) + 1
      end
    end
  end
end
if #doomed > 0 then redis.call('XDEL', dead, unpack(doomed)) end
for model, n in pairs(per_model) do redis.call('HINCRBY', stats, model .. ':dead', -n) end
return #doomed
