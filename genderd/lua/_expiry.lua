-- Shared chunk: client expiry (SPEC 10). A client whose entries were applied gets its result
-- hash (the one key of a client that lives longer than a day bucket) expiring at the time the
-- worker passes. The hash records that time in its :expires field, which the scripts read with
-- the client's state, so the expiry is set once per client per day, not on every call.
-- Defines EXPIRES, expiry_change, with_expiry, expire_client.

-- The client's result hash records the time it expires at in this field (a model's fields
-- start with its name, so no model can write it).
local EXPIRES = ':expires'

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
