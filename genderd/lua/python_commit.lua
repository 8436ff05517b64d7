-- Commit of a Python model's batch (genderd.models.PythonModel): the worker read each client's
-- state (and its version), ran the model's identify_gender over the client's entries, and
-- sends the new state and answer here. Per client, all or nothing:
--
--   * the state must still be the version the worker read (else another worker committed for
--     the client meanwhile), and
--   * every one of the client's entries must still be pending in the group (else one was
--     applied by a consumer that reclaimed it: the state computed with it would count it
--     twice). One XPENDING range of one id per entry checks that (1.2 µs an entry measured,
--     against 4 µs for an XCLAIM ... JUSTID of the same entries).
--
-- Then the entries are acknowledged (one XACK) and the state, its version and the answer
-- written, in this one atomic call: each entry's effect happens exactly once. A client that
-- fails either check changes nothing; its entries still pending are returned, and the worker
-- computes it again from the state as it is now. A result hash that is not a hash skips the
-- client (its entries stay pending and end as dead letters after max_deliveries).
--
-- An entry of an erased client written before the erasure (see _erasure.lua) is
-- acknowledged and changes nothing; the client's other entries are then a conflict (the
-- state was computed with the erased ones), computed again without them.
-- The result hash of a committed client expires as in the batch frame (_expiry.lua).
--
-- Grading (SPEC §14, _grades.lua): the worker ran the model, so it knows each entry's
-- prediction (the answer before it) and whether it was right; a committed client's entries are
-- graded here, in the same call, so each is graded once.
--
-- KEYS[1] = shard stream          <prefix>:{sN}:events
-- KEYS[2] = shard stats hash      <prefix>:{sN}:stats
-- KEYS[3] = shard erasure sentinel  <prefix>:{sN}:erasures
-- KEYS[4 .. 3+G] = the grading block's keys (_grades.lua; G = 0 when the call grades nothing)
-- KEYS[2+G+2c] = erasure marker of client c   <prefix>:{sN}:erased:<digest>
-- KEYS[3+G+2c] = result hash of client c      <prefix>:{sN}:r:<cid>
-- ARGV[1] = consumer group (the model name);  ARGV[2] = consumer name (for logs; unused)
-- ARGV[3] = when a committed client expires (ms since the epoch; "0": never)
-- then per client c, in the order of its keys:
--   the version read ("" for none), n, the n entry ids,
--   s, then s field/value pairs to set, d, then d fields to delete,
--   and when the call grades: the client's grading (_grades.lua: n again, its group and a mark
--   per entry id above) and how each entry's prediction went, one character per entry: "r" right,
--   "w" wrong, "n" no answer (sorted so, when the grading has one slot for all: then only
--   their numbers matter)
-- then the grading block (_grades.lua): "0" when the call grades nothing
-- returns: {applied, erased, graded, predicted, correct, number of skipped ids, skipped ids...,
--           then per client in conflict: c, k, its k entry ids still pending}
-- result fields: <model>:v (version), and what the worker sends (<model>:j state JSON, answer)
-- uses: _basics.lua _expiry.lua _erasure.lua _grades.lua

local stream, stats = KEYS[1], KEYS[2]
local group, consumer, expires = ARGV[1], ARGV[2], ARGV[3]
local version_field = group .. ':v'
local sentinel = redis.call('EXISTS', KEYS[3]) == 1
local spec, last = grading_block(4)
local offset = spec and spec.keys or 0
-- "r", "w", "n" as (prediction, truth) for grade()
local OUTCOMES = {[114] = {'1', '1'}, [119] = {'0', '1'}, [110] = {false, '1'}}  -- r, w, n

local applied, erased, skipped, conflicts = 0, 0, {}, {}
local a, c = 4, 0
while a <= last do
  c = c + 1
  local marker, result = KEYS[offset + 2 + 2 * c], KEYS[offset + 3 + 2 * c]
  local expected, n = ARGV[a], tonumber(ARGV[a + 1])
  local ids = {}
  for i = 1, n do ids[i] = ARGV[a + 1 + i] end
  a = a + 2 + n
  local s = tonumber(ARGV[a])
  local set_at = a + 1
  a = a + 1 + 2 * s
  local d = tonumber(ARGV[a])
  local del_at = a + 1
  a = a + 1 + d
  local graded_at = a
  if spec then a = a + 2 end

  local stored = read_hash('HMGET', result, version_field, EXPIRES)
  if stored == nil then
    for i = 1, n do skipped[#skipped + 1] = ids[i] end
  else
    local version = stored[1]
    local cutoff = erased_up_to(sentinel, marker)
    local pending, gone = {}, {}
    for i = 1, n do
      if #redis.call('XPENDING', stream, group, ids[i], ids[i], 1) == 1 then
        if cutoff and not id_after(ids[i], cutoff) then
          gone[#gone + 1] = ids[i]
        else
          pending[#pending + 1] = ids[i]
        end
      end
    end
    if #gone > 0 then
      erased = erased + redis.call('XACK', stream, group, unpack(gone))
    end
    if (version or '') ~= expected or #pending < n then
      conflicts[#conflicts + 1] = c
      conflicts[#conflicts + 1] = #pending
      for i = 1, #pending do conflicts[#conflicts + 1] = pending[i] end
    else
      redis.call('XACK', stream, group, unpack(ids))
      applied = applied + n
      local set = {version_field, fmt((tonumber(version) or 0) + 1)}
      for i = set_at, set_at + 2 * s - 1 do set[#set + 1] = ARGV[i] end
      local change = expiry_change(stored[2], expires)
      if change and change ~= '' then
        set[#set + 1] = EXPIRES
        set[#set + 1] = change
      end
      redis.call('HSET', result, unpack(set))
      if d > 0 then redis.call('HDEL', result, unpack(ARGV, del_at, del_at + d - 1)) end
      if change then expire_client(result, change, true) end
      if spec then
        local grading, outcomes = ARGV[graded_at], ARGV[graded_at + 1]
        local _, client_group, _, _, marks, uniform = client_grading(grading)
        if uniform and not spec.redriven then
          -- all in one slot, the outcomes sorted (rights, wrongs, then no answers): two finds
          local other = string.find(outcomes, '[^r]') or n + 1
          local none = string.find(outcomes, 'n', other, true) or n + 1
          tally(spec, uniform, client_group, n, none - 1, other - 1)
        else
          grade_all(spec, grading, marks, client_group, n, function(i)
            local outcome = OUTCOMES[string.byte(outcomes, i)]
            return ids[i], i, outcome[1], outcome[2]
          end)
        end
      end
    end
  end
end
if applied > 0 then redis.call('HINCRBY', stats, group .. ':applied', applied) end
if erased > 0 then redis.call('HINCRBY', stats, group .. ':erased', erased) end
local reply = {applied, erased, 0, 0, 0, #skipped}
if spec then
  reply[3], reply[4], reply[5] = write_grades(spec, stats, group)
end
for i = 1, #skipped do reply[#reply + 1] = skipped[i] end
for i = 1, #conflicts do reply[#reply + 1] = conflicts[i] end
return reply
