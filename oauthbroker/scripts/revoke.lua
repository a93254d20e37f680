-- revoke.lua: stop every refresh of the user after the provider refused the refresh
-- token of generation ARGV[1]: the dead refresh token is deleted and the status says
-- why, until a human authorizes again (authorize.lua).
--
-- KEYS[1]  the secret record   "<Prefix>:secret:{<User>}:oauth"
-- KEYS[2]  the status record   "<Prefix>:{<User>}:oauth"
-- KEYS[3]  the rotation marker "<Prefix>:{<User>}:oauth:rotation"
-- ARGV[1]  the generation of the refused refresh token
-- ARGV[2]  the new (revoked) status record, of generation ARGV[1]
--
-- Returns 1 when this call stopped the refreshes (the caller alerts), 0 when the
-- stored refresh token is another one (already stopped, refreshed or re-authorized).
local s = redis.call('GET', KEYS[1])
if not s or string.match(s, '^o1:(%d+):') ~= ARGV[1] then
  return 0
end
redis.call('DEL', KEYS[1])
redis.call('SET', KEYS[2], ARGV[2])
redis.call('DEL', KEYS[3])
return 1
