-- One bounded step of removing erased clients' entries from one stream of a shard (its event
-- stream, the stream set aside by `genderd stream set-aside`, or its dead-letter stream):
-- reads at most COUNT entries after a given id and deletes those that name one of the clients
-- given in a cid field (any of them, when the field is given twice) and whose own id is not
-- after the client's cutoff in this stream: the stream's last id when the client was marked
-- in this shard (erase.lua). Every id compared is an id of this one stream: an entry written
-- to the wrong shard's stream, and its dead letters, are compared with what that shard's
-- streams held at the erasure, never with another shard's ids. Entries written after the
-- erasure are new data: kept.
--
-- KEYS[1] = the stream   <prefix>:{sN}:events, <prefix>:{sN}:events:aside or <prefix>:{sN}:dead
-- KEYS[2] = with dead letters only: the shard stats hash <prefix>:{sN}:stats, whose
--           <model>:dead counters go down by the dead letters deleted (`status` and
--           `genderd dead` agree)
-- ARGV[1] = scan after this id ("-": from the start);  ARGV[2] = up to this id (inclusive)
-- ARGV[3] = COUNT;  ARGV[4..] = pairs: client id, its cutoff id in this stream
-- returns: {the last id read, or "" when the range is done; the number of entries read;
--           then per client with entries deleted: its pair number (1-based), how many}
-- uses: _basics.lua

local stream, after, upto, count = KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3])

local cutoffs, number = {}, {}
for a = 4, #ARGV, 2 do
  cutoffs[ARGV[a]] = ARGV[a + 1]
  number[ARGV[a]] = (a - 2) / 2
end

local start = after == '-' and '-' or '(' .. after
local entries = redis.call('XRANGE', stream, start, upto, 'COUNT', count)
local doomed, deleted, per_model = {}, {}, {}
for _, entry in ipairs(entries) do
  local fields, cid, model = entry[2], nil, nil
  for f = 1, #fields, 2 do
    -- every cid field counts: an entry that names the client in a duplicate one (dead-
    -- lettered, never applied) still holds the id
    if fields[f] == 'cid' and cid == nil and cutoffs[fields[f + 1]] then cid = fields[f + 1] end
    if fields[f] == '_model' then model = fields[f + 1] end
  end
  if cid and not id_after(entry[1], cutoffs[cid]) then
    doomed[#doomed + 1] = entry[1]
    deleted[cid] = (deleted[cid] or 0) + 1
    if model then per_model[model] = (per_model[model] or 0) + 1 end
  end
end
if #doomed > 0 then redis.call('XDEL', stream, unpack(doomed)) end
if KEYS[2] then
  for model, n in pairs(per_model) do redis.call('HINCRBY', KEYS[2], model .. ':dead', -n) end
end

local reply = {#entries < count and '' or entries[#entries][1], #entries}
for cid, n in pairs(deleted) do
  reply[#reply + 1] = number[cid]
  reply[#reply + 1] = n
end
return reply
