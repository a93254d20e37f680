-- legacylist.lua: add the token keys of a user to the legacy layout's list of them, the
-- Redis LIST named after the user, as the original refresher kept it: no TTL. Entries
-- already there stay, in their order, and the missing ones are appended: a write never
-- shrinks the list (another process may know accounts this one does not yet; removals
-- are made by the one that saw the broker drop an account). A key of that name holding
-- anything but a list belongs to someone else and is left alone.
-- KEYS[1]  the list, named after the user
-- ARGV     the token keys, in order ("token:USER", "token:ACCOUNT", ...)
-- Returns how many entries were appended, or an error reply: WRONGTYPE when the key is
-- not a list, Redis's own otherwise.
local old = redis.pcall('LRANGE', KEYS[1], 0, -1)
if type(old) == 'table' and old.err then
  if string.sub(old.err, 1, 9) == 'WRONGTYPE' then
    return redis.error_reply('WRONGTYPE the key ' .. KEYS[1] .. ' is not a list: left alone')
  end
  return old
end
local have = {}
for _, k in ipairs(old) do
  have[k] = true
end
local add = {}
for _, k in ipairs(ARGV) do
  if not have[k] then
    have[k] = true
    add[#add + 1] = k
  end
end
local push = add
if #old > 0 and redis.call('PTTL', KEYS[1]) >= 0 then
  -- written with a TTL (by an earlier version): written again without one
  redis.call('DEL', KEYS[1])
  push = old
  for _, k in ipairs(add) do
    push[#push + 1] = k
  end
end
-- RPUSH in slices: Lua's unpack has a small stack.
for i = 1, #push, 500 do
  redis.call('RPUSH', KEYS[1], unpack(push, i, math.min(i + 499, #push)))
end
return #add
