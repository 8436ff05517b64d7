-- The stored states of a Python model's clients, for the worker to run the model on
-- (genderd.models.PythonModel): one call for a whole batch instead of one HMGET per client.
--
-- KEYS[c] = result hash of client c   <prefix>:{sN}:r:<cid>
-- ARGV = the fields to read from each (the state, its version, the newest event's ts)
-- returns: for each client in turn, the values of those fields (nil where absent); a result
-- hash that is not a hash reads as absent (the commit then skips the client)

local out, n = {}, 0
for c = 1, #KEYS do
  local values = redis.pcall('HMGET', KEYS[c], unpack(ARGV))
  if values.err then values = {} end
  for i = 1, #ARGV do
    n = n + 1
    out[n] = values[i] or false
  end
end
return out
