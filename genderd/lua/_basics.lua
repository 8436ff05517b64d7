-- Shared chunk: what every kind of script may need. The day's length, integers as decimal
-- strings, comparisons of decimal strings and stream ids, reading a hash that may not be
-- one, and the error reply naming a key of another type. Defines MS_PER_DAY, fmt, read_hash,
-- wrong_type, expect_type, greater, id_after; touches only keys its callers pass in.
local MS_PER_DAY = 86400000

local function fmt(n)
  return string.format('%d', n)
end

-- redis.pcall for a read whose failure means "this key is not a hash": the reply, or nil on
-- WRONGTYPE. Any other error is raised.
local function read_hash(...)
  local reply = redis.pcall(...)
  if type(reply) == 'table' and reply.err then
    if string.find(reply.err, 'WRONGTYPE', 1, true) then return nil end
    error(reply)
  end
  return reply
end

-- the error reply for a key that holds another type than ``expected``, naming both (callers
-- map a reply starting with WRONGTYPE to genderd.transport.WrongTypeError)
local function wrong_type(key, expected)
  return redis.error_reply('WRONGTYPE ' .. key .. ' holds a ' .. redis.call('TYPE', key).ok
    .. ', not a ' .. expected)
end

-- stop the script, before it writes anything, with wrong_type's reply when `key` holds another
-- type than `expected` (a missing key is fine): one line per key checked, from anywhere
local function expect_type(key, expected)
  local found = redis.call('TYPE', key).ok
  if found ~= 'none' and found ~= expected then error(wrong_type(key, expected)) end
end

-- a > b for non-negative decimal integers without leading zeros, of any length
local function greater(a, b)
  if #a ~= #b then return #a > #b end
  return a > b
end

-- stream id a ("<ms>-<seq>") is after stream id b
local function id_after(a, b)
  local ms_a, seq_a = string.match(a, '^(%d+)-(%d+)$')
  local ms_b, seq_b = string.match(b, '^(%d+)-(%d+)$')
  if ms_a ~= ms_b then return greater(ms_a, ms_b) end
  return greater(seq_a, seq_b)
end
