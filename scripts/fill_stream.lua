-- Benchmark helper (scripts/bench_lifecycle.py): append N small entries to one stream in one
-- call, as a producer would have over weeks: cid C<k> for k = first+1 .. first+N modulo the
-- clients, a gender, a fixed ts. Server-side, so that ten million entries take minutes, not
-- the hours a pipelined client needs on a shared machine.
--
-- KEYS[1] = the stream   <prefix>:{sN}:events
-- ARGV[1] = N;  ARGV[2] = first;  ARGV[3] = clients;  ARGV[4] = ts
-- returns: N
-- uses:

local stream, n, first = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2])
local clients, ts = tonumber(ARGV[3]), ARGV[4]
local genders = {'female', 'male', 'kids'}
for i = 1, n do
  local k = (first + i) % clients
  redis.call('XADD', stream, '*', 'cid', 'C' .. k, 'gender', genders[k % 3 + 1], 'ts', ts)
end
return n
