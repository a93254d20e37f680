-- legacylist.lua: replace the legacy layout's list of a user's token keys, the Redis
-- LIST named after the user, as the original refresher kept it: no TTL. A key of that
-- name holding anything but a list belongs to someone else and is left alone.
-- KEYS[1]  the list, named after the user
-- ARGV     the token keys, in order ("token:USER", "token:ACCOUNT", ...)
-- Returns the entries the list held before (empty when there was none), or an error
-- reply: WRONGTYPE when the key is not a list, Redis's own otherwise (NOPERM...).
local old = redis.pcall('LRANGE', KEYS[1], 0, -1)
if type(old) == 'table' and old.err then
  if string.sub(old.err, 1, 9) == 'WRONGTYPE' then
    return redis.error_reply('WRONGTYPE the key ' .. KEYS[1] .. ' is not a list: left alone')
  end
  return old
end
redis.call('DEL', KEYS[1])
-- RPUSH in slices: Lua's unpack has a small stack.
for i = 1, #ARGV, 500 do
  redis.call('RPUSH', KEYS[1], unpack(ARGV, i, math.min(i + 499, #ARGV)))
end
return old
