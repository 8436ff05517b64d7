-- Shared chunk: what every kind of script may need. The day's length, integers as decimal
-- strings, comparisons of decimal strings and stream ids, reading a hash that may not be one,
-- and refusing a key of the wrong type. Defines MS_PER_DAY, fmt, read_hash, greater,
-- id_after, expect_type; touches only keys its callers pass in.
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

-- Stop the script, before it writes anything, when `key` holds something other than `kind`
-- (a missing key is fine), with an error that names the key: "WRONGTYPE <key> holds a
-- <type>, not a <kind>" (the command line and the API say it in one line).
local function expect_type(key, kind)
  local found = redis.call('TYPE', key).ok
  if found ~= 'none' and found ~= kind then
    error({err = 'WRONGTYPE ' .. key .. ' holds a ' .. found .. ', not a ' .. kind})
  end
end
