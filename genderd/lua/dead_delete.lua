-- Delete dead letters of one shard, atomically with lowering the <model>:dead counter of the
-- model that wrote each (`genderd dead purge`, and `genderd dead redrive` once an entry is
-- written again), so that `genderd status` and `genderd dead` agree. A dead letter already
-- gone (purged, re-driven, erased or trimmed meanwhile) is skipped: counted once.
--
-- KEYS[1] = dead-letter stream    <prefix>:{sN}:dead
-- KEYS[2] = shard stats hash      <prefix>:{sN}:stats
-- ARGV[1..] = the dead letters' ids
-- returns: the number of dead letters deleted
-- uses: _deadcount.lua

local dead, stats = KEYS[1], KEYS[2]

local doomed, rows = {}, {}
for a = 1, #ARGV do
  local found = redis.call('XRANGE', dead, ARGV[a], ARGV[a])
  if #found == 1 then
    doomed[#doomed + 1] = ARGV[a]
    rows[#rows + 1] = found[1]
  end
end
if #doomed > 0 then redis.call('XDEL', dead, unpack(doomed)) end
lower_dead_counts(stats, rows)
return #doomed
