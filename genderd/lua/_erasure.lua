-- Shared chunk: erasure markers (SPEC 9). Erasing a client (erase.lua) sets its marker in
-- every shard to the last id of that shard's stream at that moment (an entry of the client
-- written to the wrong shard is compared with the marker of the shard whose stream holds it:
-- ids are ordered only within one stream), and each shard's sentinel to the greatest marker
-- id of the shard (it lives as long as the newest marker). An entry of the client up to its
-- marker's id was written before the erasure: it is acknowledged and changes nothing, whoever
-- applies it (a stopped worker's batch in hand, a reclaim, a stale batch, a replay, a
-- re-drive). Only an entry up to the sentinel's id can be such an entry. The batch frame
-- (_frame.lua) reads the markers itself; this chunk serves the scripts that are given every
-- client's marker (python_commit.lua, deadletter.lua). Defines erased_up_to.

-- The erasure marker's cutoff id for the client whose marker is `marker`, or nil; `sentinel`
-- is what EXISTS said of the shard's sentinel (no sentinel: no marker to look up). An entry
-- whose id is not after the cutoff (id_after, _basics.lua) was written before the erasure.
local function erased_up_to(sentinel, marker)
  if not sentinel then return nil end
  local cutoff = redis.call('GET', marker)
  return cutoff or nil
end
