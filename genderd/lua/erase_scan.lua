-- One bounded step of removing erased clients' entries from a stream (the shard's event
-- stream, or a dead-letter stream): reads at most COUNT entries after a given id and deletes
-- those that name one of the clients given in a cid field (any of them, when the field is
-- given twice) and whose id (or, in dead letters, original id) is not after the client's
-- erasure marker (erase.lua). Entries written after the erasure are new data: kept.
--
-- KEYS[1] = the stream   <prefix>:{sN}:events or <prefix>:{sN}:dead
-- KEYS[2] = with dead letters only: the shard stats hash <prefix>:{sN}:stats, whose
--           <model>:dead counters go down by the dead letters deleted (`status` and
--           `genderd dead` agree)
-- ARGV[1] = scan after this id ("-": from the start);  ARGV[2] = up to this id (inclusive)
-- ARGV[3] = COUNT;  ARGV[4] = the field holding the id compared ("": the entry's own id)
-- ARGV[5..] = pairs: client id, its marker's id
-- returns: {the last id read, or "" when the range is done; the number of entries read;
--           then per client with entries deleted: its pair number (1-based), how many}
-- uses: _basics.lua

local stream, after, upto, count, id_field = KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]

local cutoffs, number = {}, {}
for a = 5, #ARGV, 2 do
  cutoffs[ARGV[a]] = ARGV[a + 1]
  number[ARGV[a]] = (a - 3) / 2
end

local start = after == '-' and '-' or '(' .. after
local entries = redis.call('XRANGE', stream, start, upto, 'COUNT', count)
local doomed, deleted, per_model = {}, {}, {}
for _, entry in ipairs(entries) do
  local fields, cid, id, model = entry[2], nil, entry[1], nil
  for f = 1, #fields, 2 do
    -- every cid field counts: an entry that names the client in a duplicate one (dead-
    -- lettered, never applied) still holds the id
    if fields[f] == 'cid' and cid == nil and cutoffs[fields[f + 1]] then cid = fields[f + 1] end
    if id_field ~= '' and fields[f] == id_field then id = fields[f + 1] end
    if fields[f] == '_model' then model = fields[f + 1] end
  end
  local cutoff = cid and cutoffs[cid]
  -- an original id that is not a stream id (a hand-made dead letter) goes too
  if cutoff and not (string.match(id, '^%d+%-%d+$') and id_after(id, cutoff)) then
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
