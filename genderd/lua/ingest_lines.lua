-- Write one shard's part of a batch of `genderd produce --file` (genderd/imports.py): the
-- events of lines of one block of the input that no earlier run wrote, and their ids in the
-- block's record on the shard, in one atomic step. A line's id is made of its position and
-- its event, so a re-run (whatever it batches differently: another --rate, a flush by time,
-- a grown file) skips the lines written before and writes the others; concurrent runs write
-- each line once. Every call sets the record's lifetime again: it lives from the latest
-- write of the block.
--
-- KEYS[1] = shard stream                         <prefix>:{sN}:events
-- KEYS[2] = the block's record on the shard      <prefix>:{sN}:lines:<block digest>  (a set)
-- ARGV[1] = the record's lifetime (ms)
-- ARGV[2..] = line id, cid, gender, ts of each event of the part (at least one)
-- returns: the number of entries added (0 when every line was written before); an error reply
-- starting with WRONGTYPE that names the key when the stream or the record is not of its
-- type (nothing written)
-- uses: _basics.lua

local stream, record = KEYS[1], KEYS[2]
local ttl = ARGV[1]

local ids = {}
for i = 2, #ARGV, 4 do
  ids[#ids + 1] = ARGV[i]
end
local seen = redis.pcall('SMISMEMBER', record, unpack(ids))
if type(seen) == 'table' and seen.err then
  return wrong_type(record, 'set')
end
local kind = redis.call('TYPE', stream).ok
if kind ~= 'stream' and kind ~= 'none' then
  return wrong_type(stream, 'stream')
end

local new = {}
for n = 1, #ids do
  if seen[n] == 0 then
    local i = 2 + (n - 1) * 4
    redis.call('XADD', stream, '*', 'cid', ARGV[i + 1], 'gender', ARGV[i + 2], 'ts', ARGV[i + 3])
    new[#new + 1] = ids[n]
  end
end
if #new > 0 then
  redis.call('SADD', record, unpack(new))
end
redis.call('PEXPIRE', record, ttl)
return #new
