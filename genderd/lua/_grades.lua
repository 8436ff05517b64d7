-- Shared chunk: live grading (SPEC §14), for the scripts that apply events (the batch frame and
-- python_commit.lua). Defines grading_block, slot_of, graded_in, other_day, tally, grade_all,
-- write_grades.
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
-- genderd.grading.plan) and tells each client's in one string of marks: its first character is
-- "1" when a graded entry's ts is of another UTC day than the processing time's ("0"
-- otherwise), then one character per entry, in the client's order: "0" not graded, else the
-- byte 48 + s for the hour slot s (1: the first hour of the block). Reading a mark is one
-- string.byte: no parsing of ids or times per entry.
--
-- Grades hash <prefix>:{sN}:grades:<model>:<hour>: one field per client group of the shard (the
-- clusters of the live statistics), "<events> <predicted> <correct>". A call adds its graded
-- entries to it in one HMGET and one HSET per hour, with the hash's EXPIREAT, and to the
-- shard's stats hash (<model>:graded, :predicted, :correct: all-time totals, for metrics).

-- The grading block: nil when the call grades nothing; and the last ARGV index before it.
local function grading_block(at)
  local h = tonumber(ARGV[#ARGV])
  if h == 0 then return nil, #ARGV - 1 end
  local top = #ARGV - 1
  local spec = {hours = {}, tally = {}, at = at, graded = 0, predicted = 0, correct = 0}
  for i = 1, h do
    spec.hours[i], spec.tally[i] = tonumber(ARGV[top - h + i]), {}
  end
  spec.keep = tonumber(ARGV[top - h])
  if ARGV[top - h - 1] == '1' then spec.redriven = KEYS[at + h] end
  spec.keys = h + (spec.redriven and 1 or 0)  -- KEYS the block takes from `at`
  return spec, top - h - 2
end

-- The hour slot of a client's `position`-th entry (from 1) in its marks, nil: not graded.
local function slot_of(marks, position)
  local slot = string.byte(marks, position + 1) - 48
  if slot == 0 then return nil end
  return slot
end

-- Whether the marks grade any entry, and whether one of those is of another day.
local function graded_in(marks)
  return string.find(marks, '[^0]', 2) ~= nil
end

local function other_day(marks)
  return string.byte(marks, 1) == 49
end

-- Add `e` graded entries of client group `group` in hour slot `slot`, of which `p` predicted
-- and `c` predicted right, to the call's tally.
local function tally(spec, slot, group, e, p, c)
  local counts = spec.tally[slot][group]
  if counts == nil then
    spec.tally[slot][group] = {e, p, c}
  else
    counts[1], counts[2], counts[3] = counts[1] + e, counts[2] + p, counts[3] + c
  end
  spec.graded, spec.predicted, spec.correct = spec.graded + e, spec.predicted + p,
    spec.correct + c
end

-- Grade a client's entries (`count` of them; `entry(j)` gives the j-th one's id, its position
-- among the client's entries, its prediction (false: none) and its gender) of client group
-- `group` with its `marks`: each entry in its hour slot unless it is not graded or re-driven.
-- The counts are summed per run of one slot (a client's entries are nearly always of one
-- hour) before they reach the tally.
local function grade_all(spec, marks, group, count, entry)
  local run, e, p, c = nil, 0, 0, 0
  for j = 1, count do
    local id, position, prediction, truth = entry(j)
    local slot = string.byte(marks, position + 1) - 48
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
-- the model's totals to the shard's stats hash `stats`.
local function write_grades(spec, stats, model)
  if spec.graded == 0 then return end
  redis.call('HINCRBY', stats, model .. ':graded', spec.graded)
  if spec.predicted > 0 then redis.call('HINCRBY', stats, model .. ':predicted', spec.predicted) end
  if spec.correct > 0 then redis.call('HINCRBY', stats, model .. ':correct', spec.correct) end
  for i, groups in ipairs(spec.tally) do
    local fields, counts = {}, {}
    for group, c in pairs(groups) do
      fields[#fields + 1] = group
      counts[#counts + 1] = c
    end
    if #fields > 0 then
      local key = KEYS[spec.at + i - 1]
      -- a grades hash holding another type loses these grades, never the events
      local stored = read_hash('HMGET', key, unpack(fields)) or {}
      local set = {}
      for f = 1, #fields do
        local c, e, p, r = counts[f], 0, 0, 0
        if stored[f] then
          e, p, r = string.match(stored[f], '^(%d+) (%d+) (%d+)$')
          e, p, r = tonumber(e) or 0, tonumber(p) or 0, tonumber(r) or 0
        end
        set[#set + 1] = fields[f]
        set[#set + 1] = fmt(e + c[1]) .. ' ' .. fmt(p + c[2]) .. ' ' .. fmt(r + c[3])
      end
      if read_hash('HSET', key, unpack(set)) then
        redis.call('EXPIREAT', key, fmt((spec.hours[i] + 1) * 3600 + spec.keep))
      end
    end
  end
end
