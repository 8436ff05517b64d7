-- Shared chunk: counters of the configured genders, for the counting models (top, top7d and
-- every TopWindow model). Defines genders_at, counter_fields, add_events, count_event, argmax,
-- lead, changed_counters.
-- uses: _basics.lua
--
-- The counting models get the configured genders, sorted, as parameters (ARGV: their number G,
-- then the names). A hash keeps a gender's counters in two fields (counter_fields: the number
-- of events, and the newest one's ts). In Lua they stay flat, as HMGET returns those fields: in
-- a table t from index `at`, t[at+2i-2] is the count of gender i and t[at+2i-1] its newest ts
-- (counts: strings or numbers; ts: the decimal strings they came in, compared with `greater`;
-- false: none). A gender that is no longer configured keeps its fields but is not counted in
-- answers (until it is configured again). Since data layout 3 the result hash keeps only the
-- answer (the gender) and the counters: the API derives the scores and the newest event's ts
-- from the counters at read time, so an apply builds no JSON and writes two fields less.

-- The genders in ARGV[a+1 .. a+G] (G = ARGV[a]): names, index of each name, and G.
local function genders_at(a)
  local names, index = {}, {}
  for i = 1, tonumber(ARGV[a]) do
    names[i] = ARGV[a + i]
    index[ARGV[a + i]] = i
  end
  return names, index, #names
end

-- Field names of counters: prefix .. g (count) and prefix .. g .. suffix (newest), per gender,
-- in the flat order above.
local function counter_fields(names, count_prefix, newest_prefix, newest_suffix)
  local fields = {}
  for i, gender in ipairs(names) do
    fields[2 * i - 1] = count_prefix .. gender
    fields[2 * i] = newest_prefix .. gender .. newest_suffix
  end
  return fields
end

-- Add `n` events of gender i, the newest at `ts` (a string), to the counters t[at..].
local function add_events(t, at, i, n, ts)
  local c = at + 2 * i - 2
  t[c] = (tonumber(t[c]) or 0) + n
  local newest = t[c + 1]
  if ts and (not newest or greater(ts, newest)) then t[c + 1] = ts end
end

-- Count one event of the gender whose count is t[c] (its newest ts t[c+1]) at `ts` (a
-- string), and append what changes to the flat HSET list `set`, as the fields fields[c] and
-- fields[c+1] (a counter that changes again is appended again: HSET keeps the last value).
local function count_event(t, c, ts, set, fields)
  local n = #set
  t[c] = (tonumber(t[c]) or 0) + 1
  set[n + 1], set[n + 2] = fields[c], t[c]
  local newest = t[c + 1]
  if not newest or greater(ts, newest) then
    t[c + 1] = ts
    set[n + 3], set[n + 4] = fields[c + 1], ts
  end
end

-- The answer (a gender number, nil: none) after gender i's counters in t[at..] grew, when it was
-- `best` before: only i can overtake it (argmax's order: more events, a newer event, then the
-- smaller name), so this is argmax without going over every gender. Gender i's count was just
-- counted (count_event, add_events: a number); the leader's is kept converted in t (a string
-- as read: converting it costs more than the rest of this function, and the next lead and
-- argmax then read a number).
local function lead(t, at, best, i)
  if best == nil or best == i then return i end
  local c, b = at + 2 * i - 2, at + 2 * best - 2
  local mine, theirs = t[c], tonumber(t[b]) or 0
  t[b] = theirs
  if mine ~= theirs then return mine > theirs and i or best end
  local ts, their_ts = t[c + 1] or '', t[b + 1] or ''
  if ts ~= their_ts then return greater(ts, their_ts) and i or best end
  return i < best and i or best
end

-- The gender number of argmax (see there), nil when nothing is counted.
local function argmax_index(names, t, at)
  local best, best_n, best_t = nil, 0, ''
  for i = 1, #names do
    local c = tonumber(t[at + 2 * i - 2])
    if c and c > 0 then
      local ts = t[at + 2 * i - 1]
      if c > best_n or (c == best_n and greater(ts, best_t)) then best, best_n, best_t = i, c, ts end
    end
  end
  return best
end

-- The answer for the counters t[at..] of `names`: the gender with the most events; ties to the
-- newest event, then the alphabetically smallest name (the names are sorted). nil when
-- nothing is counted.
local function argmax(names, t, at)
  return names[argmax_index(names, t, at)]
end

-- Append to `set` (a flat HSET list) the counter fields (`fields`) of the genders marked in
-- `marked`, with their values in t[at..], and unmark them; a gender counted zero goes to `del`
-- instead (when given). Returns set.
local function changed_counters(set, del, fields, t, at, marked)
  for i in pairs(marked) do
    local c = tonumber(t[at + 2 * i - 2])
    if c and c > 0 then
      set[#set + 1] = fields[2 * i - 1]
      set[#set + 1] = c
      set[#set + 1] = fields[2 * i]
      set[#set + 1] = t[at + 2 * i - 1]
    elseif del then
      del[#del + 1] = fields[2 * i - 1]
      del[#del + 1] = fields[2 * i]
    end
    marked[i] = nil
  end
  return set
end
