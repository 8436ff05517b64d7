-- Shared chunk: live grading (SPEC §14), for the scripts that apply events (the batch frame and
-- python_commit.lua). Defines grading_block, gradable, grade, write_grades.
-- uses: _basics.lua
--
-- A script that grades gets a grading block at the END of its ARGV (so that everything before
-- it keeps its place), read by grading_block:
--
--   ARGV[#ARGV]                  = H, the hours graded (0: nothing is graded by this call; the
--                                  block is then that one value)
--   ARGV[#ARGV-H .. #ARGV-1]     = the H hours (hours since the epoch of an event's ts), whose
--                                  grades hashes are KEYS[at .. at+H-1] (`at` is the caller's)
--   ARGV[#ARGV-H-1]              = the grading delay limit (ms): an entry whose arrival (its id's
--                                  ms) is later than its ts by more is not graded
--   ARGV[#ARGV-H-2]              = how long a grades hash outlives its hour (s)
--   ARGV[#ARGV-H-3]              = "1" when KEYS[at+H] is the model's set of re-driven entry ids
--                                  of the shard (a batch of reclaimed entries): an entry found
--                                  there (and removed) is not graded; "0" otherwise
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
  local spec = {hours = {}, index = {}, tally = {}, at = at, graded = 0, predicted = 0,
    correct = 0}
  for i = 1, h do
    local hour = tonumber(ARGV[top - h + i])
    spec.hours[i], spec.index[hour], spec.tally[i] = hour, i, {}
  end
  spec.max_delay = tonumber(ARGV[top - h])
  spec.keep = tonumber(ARGV[top - h - 1])
  if ARGV[top - h - 2] == '1' then spec.redriven = KEYS[at + h] end
  spec.keys = h + (spec.redriven and 1 or 0)  -- KEYS the block takes from `at`
  return spec, top - h - 3
end

-- Whether the entry `id` with event time `ts` (strings) arrived within the delay limit.
local function gradable(spec, id, ts)
  local arrival = tonumber(string.match(id, '^(%d+)'))
  return arrival - tonumber(ts) <= spec.max_delay
end

-- Grade the entry `id` (event time `ts`, of client group `group`): `prediction` is the model's
-- answer just before it was applied (false: none), `truth` the event's gender. Returns whether
-- it was graded (an entry outside the block's hours, or re-driven, is not).
local function grade(spec, id, ts, group, prediction, truth)
  if not gradable(spec, id, ts) then return false end
  local i = spec.index[math.floor(tonumber(ts) / 3600000)]
  if i == nil then return false end
  if spec.redriven and redis.call('SREM', spec.redriven, id) == 1 then return false end
  local counts = spec.tally[i][group]
  if counts == nil then
    counts = {0, 0, 0}
    spec.tally[i][group] = counts
  end
  counts[1] = counts[1] + 1
  spec.graded = spec.graded + 1
  if prediction then
    counts[2] = counts[2] + 1
    spec.predicted = spec.predicted + 1
    if prediction == truth then
      counts[3] = counts[3] + 1
      spec.correct = spec.correct + 1
    end
  end
  return true
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
