-- Shared chunk: the batch frame every model's apply script runs on (apply_batch), so that
-- exactly-once, the wrong-type guard, erasure and expiry are written once. Touches only keys
-- its callers pass in. Defines apply_batch.
-- uses: _basics.lua _expiry.lua
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
