-- Shared chunk: the batch frame every model's apply script runs on (apply_batch), so that
-- exactly-once, the wrong-type guard, erasure, expiry and live grading are written once.
-- Touches only keys its callers pass in. Defines apply_batch.
-- uses: _basics.lua _expiry.lua _grades.lua
--
-- The batch frame (apply_batch) owns the KEYS/ARGV layout of every apply script:
--
--   KEYS[1] = shard stream            <prefix>:{sN}:events
--   KEYS[2] = shard stats hash        <prefix>:{sN}:stats
--   KEYS[3] = shard erasure sentinel  <prefix>:{sN}:erasures (the greatest id of the shard's
--             erasure markers; it lives as long as the newest of them)
--   KEYS[4 ..] = when the call grades (the grading block of _grades.lua, at the end of ARGV):
--             the grades hash of each hour graded <prefix>:{sN}:grades:<model>:<hour>, then,
--             for a batch of reclaimed entries, the model's re-driven entry ids
--             <prefix>:{sN}:redriven-ids:<model>
--   then per client of the batch: its erasure marker <prefix>:{sN}:erased:<digest>
--               when the caller passes it (see below), then its keys (the model's own
--               contract): model.nkeys of them, or 1 + n for models with per_event_keys (n =
--               the client's entries); the first of them is always the client's result hash;
--               then, when grading, x more keys the model asked for (see "Grading" below)
--   ARGV[1] = consumer group (the model name);  ARGV[2] = processing time "now" (ms)
--   ARGV[3] = when a client touched by this call expires (ms since the epoch; "0": never)
--   ARGV[4] = the sentinel's value as the caller knows it ("" for none)
--   ARGV[5 .. 4+model.nparams] = the model's parameters
--   then per client, in the order of its keys: n (-n when its marker is passed), or, when the
--   call grades, its grading instead (_grades.lua: n, whether its marker is passed, its
--   group, x, and its entries' marks); then n entries of (id, gender, ts)
--   then the grading block (_grades.lua): "0" when the call grades nothing
--   returns: {entries applied, entries dropped as erased, entries graded, of which predicted,
--            of which correct, D, the D clients deferred (their numbers in the call, from 1),
--            ids of the entries skipped...}, or {-1, the sentinel's value} when the caller's
--            was out of date (nothing done)
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
-- Erasure ("erasure markers" in _erasure.lua): an entry of an erased client written before
-- the erasure is acknowledged here and changes nothing. Only an entry up to the shard's
-- greatest marker id (the sentinel) can be such an entry, so the caller passes the marker of
-- every client with such an entry, and of no other; the frame checks first that the sentinel
-- is still what the caller believed, and otherwise does nothing and returns its value for the
-- caller to retry with. In the steady state (entries written after the last erasure) no
-- marker is passed or read.
--
-- Expiry (_expiry.lua): a client whose entries were applied gets its result hash expiring at
-- ARGV[3]; the model's read returns the hash's :expires field after the state.
--
-- Grading (SPEC §14, _grades.lua): when the call grades, the model's apply gets a table
-- `predictions` and sets predictions[j] to its answer for the client just before the j-th
-- acknowledged entry is applied, read at that entry's time (false: no answer); the frame grades
-- each entry against its gender, in this same call, so a redelivered batch is graded once. A
-- model that cannot tell that answer from what it read (top7d: its stored counters are of
-- another day than an entry's) returns `defer` from read when it got no extra keys (x = 0):
-- the frame then leaves the client alone (nothing acknowledged) and names it in the reply,
-- and the caller calls again for it with the x keys the model needs (Model.grading_keys).

-- model = {nkeys = keys per client, or per_event_keys = true: a first key, then one per entry,
--          nparams = parameters after ARGV[4],
--          read = function(k, first, n, grading, extra, x) -> state, or false when a key has
--                 a wrong type; the result hash's :expires field; and, only when `grading`
--                 is given (the client's grading, when it has an entry to grade: slot_of and
--                 other_day in _grades.lua read it) and it got no extra keys (x = 0),
--                 `defer` when it needs them to predict (see "Grading"); KEYS[extra ..
--                 extra+x-1] are the x extra keys the caller passed (extra: nil when none),
--          apply = function(k, state, acked, m, expiry, predictions, each) -> whether the
--                  client's result hash exists after it (its expiry is then set), and whether
--                  apply wrote the :expires field: `expiry` is its new value when it must
--                  change (nil: it need not), which a model that writes the hash anyway adds
--                  to its HSET (with_expiry) to save a call. `predictions` is nil unless the
--                  client has an entry to grade; a model that grades sets predictions[1..m].
--                  A model may instead count them itself, as the built-ins do: when `each` is
--                  false (every entry graded, in one hour slot: nearly always) and it returns
--                  two more values, how many entries it predicted and how many of those
--                  right, the frame takes those counts and reads no predictions[j] (and the
--                  model need not set them); when `each` is true it must set them}
-- k is the index of the client's first key (its result hash); ARGV[first], ARGV[first+3], ...
-- are the ids of its n entries (gender and ts follow each id). acked[1..m] are the ARGV
-- indexes of the ids acknowledged by this call and not erased (m >= 1).
local defer = 'defer'

local function apply_batch(model)
  local stream, group, expires = KEYS[1], ARGV[1], ARGV[3]
  local sentinel = redis.call('GET', KEYS[3]) or ''
  if sentinel ~= ARGV[4] then return {-1, sentinel} end
  local spec, last = grading_block(4)
  local whole = spec and not spec.redriven  -- no entry of the call can be a re-driven one
  local applied, erased, skipped, acked, deferred, predictions = 0, 0, {}, {}, {}, {}
  local k, a, c = 4 + (spec and spec.keys or 0), 5 + model.nparams, 0
  while a <= last do
    c = c + 1
    local n, cutoff, client_group, x, graded, marks, uniform
    if spec then  -- its grading, which holds n
      n, client_group, x, graded, marks, uniform = client_grading(ARGV[a])
    else
      n, x = tonumber(ARGV[a]), 0
    end
    if n < 0 then  -- its marker is passed
      n = -n
      cutoff = redis.call('GET', KEYS[k]) or nil
      k = k + 1
    end
    local first, stop = a + 1, a + 3 * n
    local own = model.per_event_keys and 1 + n or model.nkeys
    local grading = graded and ARGV[a] or nil
    local extra = x > 0 and k + own or nil
    local state, stored_expiry, wants = model.read(k, first, n, grading, extra, x)
    if state == false then
      for i = first, stop, 3 do skipped[#skipped + 1] = ARGV[i] end
    elseif wants == defer and x == 0 then
      deferred[#deferred + 1] = c
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
        local told = grading and predictions or nil
        local each = told and not (uniform and whole)  -- each prediction is needed
        local exists, written, p, r = model.apply(k, state, acked, m,
          change ~= '' and change or nil, told, each)
        if exists and change then expire_client(KEYS[k], change, written) end
        if told and model.grades and not each then
          -- every entry graded, in one slot (nearly always): count the predictions only, unless
          -- the model counted them
          if p == nil then
            p, r = 0, 0
            for j = 1, m do
              local prediction = told[j]
              if prediction then
                told[j] = nil
                p = p + 1
                if prediction == ARGV[acked[j] + 1] then r = r + 1 end
              end
            end
          end
          local groups = spec.tally[uniform]  -- tally (_grades.lua) inline
          local counts = groups[client_group]
          if counts == nil then
            groups[client_group] = {m, p, r}
          else
            counts[1], counts[2], counts[3] = counts[1] + m, counts[2] + p, counts[3] + r
          end
        elseif told and model.grades then
          -- grade_all (_grades.lua) inline: entries in several slots, or re-driven ones
          local run, e = nil, 0
          p, r = 0, 0
          for j = 1, m do
            local i = acked[j]
            local prediction = told[j]
            told[j] = nil
            local slot = uniform or string.byte(grading, marks + (i - first) / 3) - 48
            if slot > 0 and not (spec.redriven and redis.call('SREM', spec.redriven, ARGV[i]) == 1)
            then
              if slot ~= run then
                if run then tally(spec, run, client_group, e, p, r) end
                run, e, p, r = slot, 0, 0, 0
              end
              e = e + 1
              if prediction then
                p = p + 1
                if prediction == ARGV[i + 1] then r = r + 1 end
              end
            end
          end
          if run then tally(spec, run, client_group, e, p, r) end
        end
      end
    end
    k = k + own + x
    a = stop + 1
  end
  if applied > 0 then redis.call('HINCRBY', KEYS[2], group .. ':applied', applied) end
  if erased > 0 then redis.call('HINCRBY', KEYS[2], group .. ':erased', erased) end
  local reply = {applied, erased, 0, 0, 0, #deferred}
  if spec then
    reply[3], reply[4], reply[5] = write_grades(spec, KEYS[2], group)
  end
  for i = 1, #deferred do reply[#reply + 1] = deferred[i] end
  for i = 1, #skipped do reply[#reply + 1] = skipped[i] end
  return reply
end
