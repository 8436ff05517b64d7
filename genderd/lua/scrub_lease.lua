-- The scrubber's lease (genderd/erasure/scrub.py): one process at a time steps the scrubs, so
-- that the server's share of time spent scrubbing does not grow with the number of workers.
-- A process takes the lease when it is free, keeps it while it holds it, and lets it go when
-- it stops; a process that dies loses it when its TTL runs out, and another takes over where
-- the scrub's state in Redis says it was.
--
-- KEYS[1] = the lease    <prefix>:scrubber
-- ARGV[1] = this process's name;  ARGV[2] = the lease's TTL (ms)
-- ARGV[3] = "hold" (take it if free, or keep it) or "release" (only if held by this process)
-- returns: 1 when this process holds the lease after the call (0 after a release), 0 when
--          another does
-- uses:

local lease, name, ttl, step = KEYS[1], ARGV[1], ARGV[2], ARGV[3]

local holder = redis.call('GET', lease)
if step == 'release' then
  if holder == name then redis.call('DEL', lease) end
  return 0
end
if holder and holder ~= name then return 0 end
redis.call('SET', lease, name, 'PX', ttl)
return 1
