-- Change, pin or unpin the champion of live grading (genderd.grading.champion), with its entry
-- in the history, in one atomic step: a check that read the champion as X changes it only if
-- it is still X and not pinned (a pin or another check in between wins).
--
-- KEYS[1] = the champion hash     <prefix>:{champion}
-- KEYS[2] = the history stream    <prefix>:{champion}:history
-- ARGV[1] = what: "change" (a check's evidence), "pin" or "unpin"
-- ARGV[2] = the champion the caller read ("" for none stored): "change" only
-- ARGV[3] = the new champion ("unpin": the current one, written only if none is stored)
-- ARGV[4] = now (ms);  ARGV[5] = the evidence or reason (JSON);  ARGV[6] = history cap
-- ARGV[7] = the champion the caller knows (the start model when none is stored), for the
--           history's "from"
-- returns: 1 when the champion hash changed, 0 when a "change" found it changed or pinned
-- (every change, pin and unpin also counts in the hash's `changes`: the metric's counter)

local champion, history = KEYS[1], KEYS[2]
local what, expected, model, now, evidence, cap = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5],
  ARGV[6]
local known = ARGV[7]
local stored = redis.call('HMGET', champion, 'model', 'pinned')
local current, pinned = stored[1] or '', stored[2] == '1'

if what == 'change' then
  if current ~= expected or pinned then return 0 end
  redis.call('HSET', champion, 'model', model, 'since_ms', now, 'evidence', evidence,
    'pinned', '0')
elseif what == 'pin' then
  redis.call('HSET', champion, 'model', model, 'pinned', '1', 'evidence', evidence)
  if current ~= model then redis.call('HSET', champion, 'since_ms', now) end
else  -- unpin
  if current == '' then
    redis.call('HSET', champion, 'model', model, 'since_ms', now, 'evidence', evidence)
  end
  redis.call('HSET', champion, 'pinned', '0')
  redis.call('HDEL', champion, 'behind')
end
redis.call('HINCRBY', champion, 'changes', 1)
local before = current ~= '' and current or known
redis.call('XADD', history, 'MAXLEN', '~', cap, '*', 'at', now, 'what', what, 'from', before,
  'to', what == 'unpin' and before or model, 'evidence', evidence)
return 1
