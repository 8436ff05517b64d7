-- Shared chunk, prepended by the loader to the scripts that name it (Redis scripts cannot
-- import). Defines the batch frame every model's apply script runs on, and the helpers of
-- the counting models. Touches only keys its callers pass in.
--
-- The batch frame (apply_batch) owns the KEYS/ARGV layout of every apply script:
--
--   KEYS[1] = shard stream            <prefix>:{sN}:events
--   KEYS[2] = shard stats hash        <prefix>:{sN}:stats
--   KEYS[3] = shard erasure sentinel  <prefix>:{sN}:erasures (the greatest id of the shard's
--             erasure markers; it lives as long as the newest of them)
--   KEYS[4..] = per client of the batch: its erasure marker <prefix>:{sN}:erased:<digest>
--               when the caller passes it (see below), then its keys (the model's own
--               contract): model.nkeys of them, or 1 + n for models with per_event_keys (n =
--               the client's entries); the first of them is always the client's result hash
--   ARGV[1] = consumer group (the model name);  ARGV[2] = processing time "now" (ms)
--   ARGV[3] = when a client touched by this call expires (ms since the epoch; "0": never)
--   ARGV[4] = the sentinel's value as the caller knows it ("" for none)
--   ARGV[5 .. 4+model.nparams] = the model's parameters
--   then per client, in the order of its keys: n (-n when its marker is passed), then n
--   entries of (id, gender, ts)
--   returns: {entries applied, entries dropped as erased, ids of the entries skipped...}, or
--            {-1, the sentinel's value} when the caller's was out of date (nothing done)
--
-- The caller groups the batch per client, so every key is read once per call. For each client
-- the frame asks the model to read its state (the read is also the wrong-type guard: a key
-- holding something other than a hash makes read return false, before anything is written,
-- because Redis does not roll back a script that fails halfway; the client's entries are then
-- skipped: left pending, retried, dead-lettered after max_deliveries). Then it acknowledges
-- each entry; an entry whose XACK returns 0 (already acknowledged, by this call's stale twin or
-- by a consumer that reclaimed it) changes nothing. The model's apply gets the entries that
-- were acknowledged and writes the client's new state and answer, once.
--
-- Erasure (SPEC 9): erasing a client sets its marker to the last id of the shard stream at
-- that moment. An entry of the client up to that id was written before the erasure: it is
-- acknowledged here and changes nothing, whoever applies it (a stopped worker's batch in hand,
-- a reclaim, a stale batch, a replay). Only an entry up to the shard's greatest marker id (the
-- sentinel) can be such an entry, so the caller passes the marker of every client with such
-- an entry, and of no other; the frame checks first that the sentinel is still what the caller believed, and
-- otherwise does nothing and returns its value for the caller to retry with. In the steady
-- state (entries written after the last erasure) no marker is passed or read.
--
-- Expiry (SPEC 10): a client whose entries were applied gets its result hash (the one key of
-- a client that lives longer than a day bucket) expiring at ARGV[3]. The hash records that
-- time in its :expires field, which the model's read returns after the state, so the expiry
-- is set once per client per day, not on every call.
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

-- The client's result hash records the time it expires at in this field (a model's fields
-- start with its name, so no model can write it).
local EXPIRES = ':expires'

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

-- Whether a client whose result hash has `stored` in :expires needs the expiry `expires`
-- (ms; '0': none) set: the field to write (expires), '' to remove the expiry, or nil.
local function expiry_change(stored, expires)
  if stored == expires then return nil end
  if expires == '0' then return stored and '' or nil end
  return expires
end

-- Append the :expires field with the value `expiry` (see apply_batch) to the flat HSET list
-- `set` when it is not nil. Returns set.
local function with_expiry(set, expiry)
  if expiry then
    set[#set + 1] = EXPIRES
    set[#set + 1] = expiry
  end
  return set
end

-- Give the result hash `result` the expiry `change` (see expiry_change); `written`: the
-- model wrote the :expires field already (with_expiry).
local function expire_client(result, change, written)
  if change == '' then
    redis.call('PERSIST', result)
    redis.call('HDEL', result, EXPIRES)
    return
  end
  if not written then redis.call('HSET', result, EXPIRES, change) end
  redis.call('PEXPIREAT', result, change)
end

-- The erasure marker's cutoff id for the client whose marker is `marker`, or nil; `sentinel`
-- is what EXISTS said of the shard's sentinel (no sentinel: no marker to look up). For the
-- scripts that are given every client's marker (python_commit.lua, deadletter.lua).
local function erased_up_to(sentinel, marker)
  if not sentinel then return nil end
  local cutoff = redis.call('GET', marker)
  return cutoff or nil
end

-- model = {nkeys = keys per client, or per_event_keys = true: a first key, then one per entry,
--          nparams = parameters after ARGV[4],
--          read = function(k, first, n) -> state, or false when a key has a wrong type; and
--                 the result hash's :expires field,
--          apply = function(k, state, acked, m, expiry) -> whether the client's result hash
--                  exists after it (its expiry is then set), and whether apply wrote the
--                  :expires field: `expiry` is its new value when it must change (nil: it
--                  need not), which a model that writes the hash anyway adds to its HSET
--                  (with_expiry) to save a call}
-- k is the index of the client's first key (its result hash); ARGV[first], ARGV[first+3], ...
-- are the ids of its n entries (gender and ts follow each id). acked[1..m] are the ARGV
-- indexes of the ids acknowledged by this call and not erased (m >= 1).
local function apply_batch(model)
  local stream, group, expires = KEYS[1], ARGV[1], ARGV[3]
  local sentinel = redis.call('GET', KEYS[3]) or ''
  if sentinel ~= ARGV[4] then return {-1, sentinel} end
  local applied, erased, skipped, acked = 0, 0, {}, {}
  local k, a = 4, 5 + model.nparams
  while a <= #ARGV do
    local n, cutoff = tonumber(ARGV[a]), nil
    if n < 0 then  -- its marker is passed
      n = -n
      cutoff = redis.call('GET', KEYS[k]) or nil
      k = k + 1
    end
    local first, stop = a + 1, a + 3 * n
    local state, stored_expiry = model.read(k, first, n)
    if state == false then
      for i = first, stop, 3 do skipped[#skipped + 1] = ARGV[i] end
    else
      local m = 0
      for i = first, stop, 3 do
        if redis.call('XACK', stream, group, ARGV[i]) == 1 then
          if cutoff and not id_after(ARGV[i], cutoff) then
            erased = erased + 1
          else
            m = m + 1
            acked[m] = i
          end
        end
      end
      if m > 0 then
        applied = applied + m
        local change = expiry_change(stored_expiry, expires)
        local exists, written = model.apply(k, state, acked, m, change ~= '' and change or nil)
        if exists and change then expire_client(KEYS[k], change, written) end
      end
    end
    k = k + (model.per_event_keys and 1 + n or model.nkeys)
    a = stop + 1
  end
  if applied > 0 then redis.call('HINCRBY', KEYS[2], group .. ':applied', applied) end
  if erased > 0 then redis.call('HINCRBY', KEYS[2], group .. ':erased', erased) end
  return {applied, erased, unpack(skipped)}
end

-- Counters of the configured genders ------------------------------------------------------------
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

-- The answer for the counters t[at..] of `names`: the gender with the most events; ties to the
-- newest event, then the alphabetically smallest name (the names are sorted). nil when
-- nothing is counted.
local function argmax(names, t, at)
  local best, best_n, best_t = nil, 0, ''
  for i = 1, #names do
    local c = tonumber(t[at + 2 * i - 2])
    if c and c > 0 then
      local ts = t[at + 2 * i - 1]
      if c > best_n or (c == best_n and greater(ts, best_t)) then best, best_n, best_t = i, c, ts end
    end
  end
  return names[best]
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

-- Windowed counters (top7d and every TopWindow model) ----------------------------------------
--
-- A client's day buckets hold its counters per UTC day (fields g and g:t). Its result hash
-- keeps, besides the answer, the window's counters as of one day D (<model>:n:<g>,
-- <model>:t:<g>) and that day and window (<model>:w = "D,W"), so that an apply on day D adds
-- its events to them instead of reading the W buckets. The answer is valid until the end of
-- day D (<model>:u; 0: not valid); lookups after that sum the buckets of days D-W+1 .. D again
-- (D = today at "now"; an event may be up to a day ahead of the clock, so tomorrow's bucket may
-- exist). The answer is kept while a bucket after D exists, even when the window is empty.

-- Sum the buckets KEYS[k+1 .. k+window] (days D-W+1 .. D) over the fields `bucket_fields`:
-- flat counters from index 1, or nil when a bucket holds something other than a hash.
local function window_sums(k, window, bucket_fields, g)
  local sums = {}
  for d = 1, window do
    local reply = read_hash('HMGET', KEYS[k + d], unpack(bucket_fields))
    if reply == nil then return nil end
    for i = 1, g do
      local n = tonumber(reply[2 * i - 1])
      if n then add_events(sums, 1, i, n, reply[2 * i]) end
    end
  end
  return sums
end

-- The fields of a windowed answer of `model` computed at day `today` with window `window`
-- from the counters t[at..] (`fields`: the result hash's counter fields; `marked`: the genders
-- whose counters changed); `ahead` tells whether a bucket after today exists. Returns the
-- fields to set (a flat name/value list) and the fields to delete. `stored_w` is the stored
-- <model>:w: when it is already this day's and window's, :w and :u are not written again;
-- otherwise every counter is, and those of another day (when there were any) that are zero now
-- are deleted.
-- per model: its answer and window field names, and the "D,W" and valid-until strings of the
-- call's day, built once per script call instead of once per client
local window_names = {}

local function window_fields(model, names, fields, t, at, ahead, today, window, now, stored_w,
                             marked)
  local f = window_names[model]
  if f == nil then
    f = {model = model, s = model .. ':s', ts = model .. ':ts', at = model .. ':at',
      w = model .. ':w', u = model .. ':u'}
    window_names[model] = f
  end
  if f.day ~= today or f.window ~= window then
    f.day, f.window = today, window
    f.dw, f.valid_until = fmt(today) .. ',' .. fmt(window), fmt((today + 1) * MS_PER_DAY)
  end
  local best = argmax(names, t, at)
  -- (:s and :ts are layout 2's scores and newest ts, deleted with the answer where left)
  if best == nil and not ahead then
    local del = {f.w, f.u, f.model, f.s, f.ts, f.at}
    for i = 1, #fields do del[#del + 1] = fields[i] end
    return {}, del
  end
  local set, del = {}, {}
  if best == nil then
    del = {f.model, f.s, f.ts, f.at}
  else
    set = {f.model, best, f.at, now}
  end
  if f.dw ~= stored_w then
    local n = #set
    set[n + 1], set[n + 2], set[n + 3], set[n + 4] = f.w, f.dw, f.u, f.valid_until
    for i = 1, #names do marked[i] = true end  -- new counters: all of them
  end
  changed_counters(set, stored_w and del or nil, fields, t, at, marked)
  return set, del
end

-- Write the windowed answer (see window_fields) into the result hash `result`.
local function store_window(result, ...)
  local set, del = window_fields(...)
  if #del > 0 then redis.call('HDEL', result, unpack(del)) end
  if #set > 0 then redis.call('HSET', result, unpack(set)) end
end
