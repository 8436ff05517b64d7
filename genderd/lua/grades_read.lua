-- The live grades of one shard over a window (genderd.grading.live): per model, per client
-- group, the events graded, predicted and correct, summed over the window's hours, in one call
-- per shard.
--
-- KEYS = the grades hashes <prefix>:{sN}:grades:<model>:<hour>, H of them per model, model by
-- model (the same hours for each)
-- ARGV[1] = H, the hours per model
-- returns: per model, in KEYS' order, a flat list {group, events, predicted, correct, ...};
--          a key that is not a hash counts as empty
-- uses: _basics.lua

local hours = tonumber(ARGV[1])
local out = {}
for m = 1, #KEYS / hours do
  local sums, groups = {}, {}
  for h = 1, hours do
    local flat = read_hash('HGETALL', KEYS[(m - 1) * hours + h]) or {}
    for f = 1, #flat, 2 do
      local e, p, c = string.match(flat[f + 1], '^(%d+) (%d+) (%d+)$')
      if e then
        local s = sums[flat[f]]
        if s == nil then
          s = {0, 0, 0}
          sums[flat[f]] = s
          groups[#groups + 1] = flat[f]
        end
        s[1], s[2], s[3] = s[1] + tonumber(e), s[2] + tonumber(p), s[3] + tonumber(c)
      end
    end
  end
  local list = {}
  for _, group in ipairs(groups) do
    local s = sums[group]
    list[#list + 1] = group
    list[#list + 1] = s[1]
    list[#list + 1] = s[2]
    list[#list + 1] = s[3]
  end
  out[m] = list
end
return out
