-- Shared chunk: live grading (SPEC §14), for the scripts that apply events (the batch frame and
-- python_commit.lua). Defines grading_block, client_grading, other_day, slot_of, tally,
-- grade_all, write_grades.
-- uses: _basics.lua
--
-- A script that grades gets a grading block at the END of its ARGV (so that everything before
-- it keeps its place), read by grading_block:
--
--   ARGV[#ARGV]                  = H, the hours graded (0: nothing is graded by this call; the
--                                  block is then that one value)
--   ARGV[#ARGV-H .. #ARGV-1]     = the H hours (hours since the epoch of an event's ts), whose
--                                  grades hashes are KEYS[at .. at+H-1] (`at` is the caller's)
--   ARGV[#ARGV-H-1]              = how long a grades hash outlives its hour (s)
--   ARGV[#ARGV-H-2]              = "1" when KEYS[at+H] is the model's set of re-driven entry ids
--                                  of the shard (a batch of reclaimed entries): an entry found
--                                  there (and removed) is not graded; "0" otherwise
--
-- The worker decides which entries are graded (those that arrived within the delay limit,
-- genderd.grading.plan) and tells each client's in one string, its *grading*, which also
-- carries the client's count of entries (in a call that grades, the frame reads no other
-- ARGV per client before its entries):
--
--   byte 1         48 + flags: 1 a graded entry's ts is of another UTC day than the processing
--                  time's, 2 extra keys follow (x, see _frame.lua), 4 an entry is graded,
--                  8 every entry is graded, in one hour slot (the marks are that one slot),
--                  16 the client's erasure marker is passed (_frame.lua)
--   bytes 2-3      the client's group, the field of the grades hash (two characters)
--   bytes 4-6      n, the client's entries in the call: (b4 - 48) * 4096 + (b5 - 48) * 64 +
--                  (b6 - 48)
--   bytes 7-8      with flag 2: x = (byte 7 - 48) * 64 + (byte 8 - 48)
--   then           one mark per entry, in the client's order: "0" not graded, else the byte
--                  48 + s for the hour slot s (1: the first hour of the block); with flag 8,
--                  the one slot of them all
--
-- Reading it is one string.byte call: no parsing of ids, times or numbers, and one ARGV per
-- client.

-- Grades hash <prefix>:{sN}:grades:<model>:<hour>: one field per client group of the shard (the
-- clusters of the live statistics), "<events> <predicted> <correct>". A call adds its graded
-- entries to it in one HMGET and one HSET per hour, with the hash's EXPIREAT, and to the
-- shard's stats hash (<model>:graded, :predicted, :correct: all-time totals, for metrics).

-- The grading block: nil when the call grades nothing; and the last ARGV index before it.
local function grading_block(at)
  local h = tonumber(ARGV[#ARGV])
  if h == 0 then return nil, #ARGV - 1 end
  local top = #ARGV - 1
  local spec = {hours = {}, tally = {}, at = at}
  for i = 1, h do
    spec.hours[i], spec.tally[i] = tonumber(ARGV[top - h + i]), {}
  end
  spec.keep = tonumber(ARGV[top - h])
  if ARGV[top - h - 1] == '1' then spec.redriven = KEYS[at + h] end
  spec.keys = h + (spec.redriven and 1 or 0)  -- KEYS the block takes from `at`
  return spec, top - h - 2
end

-- A client's grading: its count of entries (negative when its erasure marker is passed), its
-- group (a number: the tally's key), x (its extra keys), whether an entry is graded, where its
-- marks start, and the one slot of all its entries (flag 8; else nil).
local function client_grading(grading)
  local flags, g1, g2, n1, n2, n3, b7, b8, b9 = string.byte(grading, 1, 9)  -- one call
  flags = flags - 48
  local n = (n1 - 48) * 4096 + (n2 - 48) * 64 + n3 - 48
  if flags >= 16 then n, flags = -n, flags - 16 end
  local x, marks, first_mark = 0, 7, b7
  if flags % 4 >= 2 then x, marks, first_mark = (b7 - 48) * 64 + (b8 - 48), 9, b9 end
  return n, (g1 - 48) * 64 + g2 - 48, x, flags % 8 >= 4, marks,
    flags >= 8 and first_mark - 48 or nil
end

-- Whether a graded entry of the client is of another day than the processing time's.
local function other_day(grading)
  return (string.byte(grading, 1) - 48) % 2 == 1
end

-- The hour slot of the client's `position`-th entry (from 1), nil when it is not graded.
local function slot_of(grading, position)
  local flags = (string.byte(grading, 1) - 48) % 16
  local marks = flags % 4 >= 2 and 9 or 7
  local slot = string.byte(grading, flags >= 8 and marks or marks + position - 1) - 48
  if slot == 0 then return nil end
  return slot
end

-- Add `e` graded entries of client group `group` in hour slot `slot`, of which `p` predicted
-- and `c` predicted right, to the call's tally (the totals are summed when it is written).
local function tally(spec, slot, group, e, p, c)
  local groups = spec.tally[slot]
  local counts = groups[group]
  if counts == nil then
    groups[group] = {e, p, c}
  else
    counts[1], counts[2], counts[3] = counts[1] + e, counts[2] + p, counts[3] + c
  end
end

-- Grade a client's entries (`count` of them; `entry(j)` gives the j-th one's id, its position
-- among the client's entries, its prediction (false: none) and its gender) of client group
-- `group`, whose marks start at byte `marks` of its `grading`: each entry in its hour slot
-- unless it is not graded or re-driven. The counts are summed per run of one slot (a client's
-- entries are nearly always of one hour) before they reach the tally. (The batch frame, on the
-- hot path, does the same without a closure per client.)
local function grade_all(spec, grading, marks, group, count, entry)
  local run, e, p, c = nil, 0, 0, 0
  local uniform = (string.byte(grading, 1) - 48) % 16 >= 8
  for j = 1, count do
    local id, position, prediction, truth = entry(j)
    local slot = string.byte(grading, uniform and marks or marks + position - 1) - 48
    if slot > 0 and not (spec.redriven and redis.call('SREM', spec.redriven, id) == 1) then
      if slot ~= run then
        if run then tally(spec, run, group, e, p, c) end
        run, e, p, c = slot, 0, 0, 0
      end
      e = e + 1
      if prediction then
        p = p + 1
        if prediction == truth then c = c + 1 end
      end
    end
  end
  if run then tally(spec, run, group, e, p, c) end
end

-- Add the call's grades to the grades hashes (one HMGET and one HSET per hour touched) and
-- the model's totals to the shard's stats hash `stats`; returns the call's totals (graded,
-- predicted, correct).
local function write_grades(spec, stats, model)
  local graded, predicted, correct = 0, 0, 0
  for i, groups in ipairs(spec.tally) do
    local fields, counts = {}, {}
    for group, c in pairs(groups) do  -- the field: the group's two characters again
      fields[#fields + 1] = string.char(48 + math.floor(group / 64), 48 + group % 64)
      counts[#counts + 1] = c
      graded, predicted, correct = graded + c[1], predicted + c[2], correct + c[3]
    end
    if #fields > 0 then
      local key = KEYS[spec.at + i - 1]
      -- a grades hash holding another type loses these grades, never the events
      local stored = read_hash('HMGET', key, unpack(fields)) or {}
      local set = {}
      for f = 1, #fields do
        -- none yet, or not three counts: counted afresh; the digits are added as numbers
        -- (cheaper than tonumber)
        local c = counts[f]
        local e, p, r = string.match(stored[f] or '', '^(%d+) (%d+) (%d+)$')
        set[#set + 1] = fields[f]
        set[#set + 1] = string.format('%d %d %d', (e or 0) + c[1], (p or 0) + c[2], (r or 0) + c[3])
      end
      if read_hash('HSET', key, unpack(set)) then
        redis.call('EXPIREAT', key, fmt((spec.hours[i] + 1) * 3600 + spec.keep))
      end
    end
  end
  if graded > 0 then
    redis.call('HINCRBY', stats, model .. ':graded', graded)
    if predicted > 0 then redis.call('HINCRBY', stats, model .. ':predicted', predicted) end
    if correct > 0 then redis.call('HINCRBY', stats, model .. ':correct', correct) end
  end
  return graded, predicted, correct
end
