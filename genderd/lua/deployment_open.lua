-- Opens a deployment: when the meta hash has no shard count yet, records the configured one
-- with the creation time and the data layout (all or nothing, so that a racing process sees
-- every field or none), then returns what is stored. On an initialised deployment it only
-- reads, so it runs on a read replica.
--
-- KEYS[1] = meta hash     <prefix>:meta
-- ARGV[1] = configured shard count
-- ARGV[2] = now (ms): the creation time
-- ARGV[3] = this release's data layout
-- ARGV[4..7] = the meta hash's field names: shards, creation time, layout, created layout
-- returns: {shards, created layout (false: not recorded), 1 when this call created it else 0}
local meta = KEYS[1]
local shards, created_ms, layout = ARGV[1], ARGV[2], ARGV[3]
local shards_field, created_field, layout_field, created_layout_field =
    ARGV[4], ARGV[5], ARGV[6], ARGV[7]

local created = 0
if redis.call("HEXISTS", meta, shards_field) == 0 then
    redis.call("HSET", meta, shards_field, shards, created_field, created_ms,
        layout_field, layout, created_layout_field, layout)
    created = 1
end
local stored = redis.call("HMGET", meta, shards_field, created_layout_field)
return {stored[1], stored[2], created}
