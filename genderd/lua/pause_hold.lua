-- A replay's hold on the pause of one model's workers (genderd.pause): every step checks that
-- the pause still holds this replay's token, so a replay whose pause expired (it was stopped,
-- or hung past the TTL) and another replay that took the pause since never undo each other.
-- The pause itself is taken with SET NX PX (no script needed).
--
-- KEYS[1] = the pause              <prefix>:{pause:<model>}
-- KEYS[2] = the rebuilding marker  <prefix>:{pause:<model>}:rebuilding
-- ARGV[1] = this replay's token;  ARGV[2] = the pause's TTL (ms), set again by every step
-- ARGV[3] = the step: "refresh"; "mark" (set the marker: the wipe starts); "unmark" (delete
--           it: the groups are back); "release" (delete the pause: the workers resume)
-- returns: 1 when done, 0 when the pause no longer holds the token (nothing changed)
-- uses:

local pause, marker = KEYS[1], KEYS[2]
local token, ttl, step = ARGV[1], ARGV[2], ARGV[3]

if redis.call('GET', pause) ~= token then return 0 end
if step == 'release' then
  redis.call('DEL', pause)
  return 1
end
redis.call('PEXPIRE', pause, ttl)
if step == 'mark' then
  redis.call('SET', marker, token)
elseif step == 'unmark' then
  redis.call('DEL', marker)
end
return 1
