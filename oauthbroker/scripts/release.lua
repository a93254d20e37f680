-- release.lua: drop the caller's rotation marker after a refresh the provider
-- answered without rotating anything (an error answer), or that was never sent: the
-- refresh token is still good, and the next process need not wait.
--
-- KEYS[1]  the rotation marker "<Prefix>:{<User>}:oauth:rotation"
-- ARGV[1]  the caller's owner id
--
-- Returns 1 when the marker was the caller's and was deleted, else 0.
local c = redis.call('GET', KEYS[1])
if c and string.match(c, '^%d+:%x+:%d+:%d+:(.+)$') == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
