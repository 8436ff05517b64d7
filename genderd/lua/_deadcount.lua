-- Shared chunk: the <model>:dead counters of a shard's stats hash follow its dead-letter
-- stream. Whatever deletes dead letters (purge, re-drive, the stream's cap) lowers the counter
-- of the model that wrote each, in the same call. Defines lower_dead_counts; touches only the
-- stats hash its callers pass in.

-- Lower `stats`' <model>:dead counters by the dead letters in `rows` (XRANGE rows: id and
-- fields, the model in `_model`), about to be deleted by the caller.
local function lower_dead_counts(stats, rows)
  local per_model = {}
  for _, row in ipairs(rows) do
    local fields = row[2]
    for f = 1, #fields, 2 do
      if fields[f] == '_model' then
        per_model[fields[f + 1]] = (per_model[fields[f + 1]] or 0) + 1
      end
    end
  end
  for model, n in pairs(per_model) do redis.call('HINCRBY', stats, model .. ':dead', -n) end
end
