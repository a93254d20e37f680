-- Writes the accounts of some users into the registry's account map in one step, so
-- two daemons writing at once leave one of their views whole, never a mix.
-- KEYS[1]  {prefix}:accounts, a hash of account -> user
-- ARGV     for each user: the user, the number of its accounts, then its accounts
-- Every field the script is given is set to its user; a field held by one of these users
-- that the script does not give is removed (the user no longer has that account).
-- Fields of other users are left alone. Returns the number of fields changed.
local want, users = {}, {}
local i = 1
while i <= #ARGV do
  local user, n = ARGV[i], tonumber(ARGV[i + 1])
  users[user] = true
  want[user] = user -- a login user is an account of its own
  for j = 1, n do
    want[ARGV[i + 1 + j]] = user
  end
  i = i + 2 + n
end
local old = redis.call('HGETALL', KEYS[1])
local changed = 0
for k = 1, #old, 2 do
  local account, user = old[k], old[k + 1]
  if users[user] and want[account] ~= user then
    redis.call('HDEL', KEYS[1], account)
    changed = changed + 1
  end
end
local have = {}
for k = 1, #old, 2 do
  have[old[k]] = old[k + 1]
end
for account, user in pairs(want) do
  if have[account] ~= user then
    redis.call('HSET', KEYS[1], account, user)
    changed = changed + 1
  end
end
return changed
