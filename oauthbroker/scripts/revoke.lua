-- revoke.lua: stop every refresh of the user after the provider refused the refresh
-- token of generation ARGV[1] of grant ARGV[2]. The refused secret is moved, unchanged,
-- to KEYS[4] (never sent again by this package: evidence for the operator), the status
-- says why, and the revocation alert is recorded as pending (see alerts.lua), until a
-- human authorizes again (authorize.lua).
--
-- KEYS[1]  the secret record   "<Prefix>:secret:{<User>}:oauth"
-- KEYS[2]  the status record   "<Prefix>:{<User>}:oauth"
-- KEYS[3]  the rotation marker "<Prefix>:{<User>}:oauth:rotation"
-- KEYS[4]  the refused secret  "<Prefix>:secret:{<User>}:oauth:refused"
-- KEYS[5]  the alerts          "<Prefix>:{<User>}:oauth:alerts"
-- ARGV[1]  the generation of the refused refresh token
-- ARGV[2]  its grant
-- ARGV[3]  the JSON of the revoked status (its header, the refused record's, is
--          written here)
-- ARGV[4]  the alert's field ("revoked:<grant>:<generation>")
-- ARGV[5]  the alert's payload (JSON)
--
-- Returns 1 when this call stopped the refreshes, 0 when no refresh token is stored
-- (already stopped), 2 when the stored refresh token is another one (a new grant, or
-- a newer generation of this one): the refusal says nothing about it, and the caller
-- claims it again.
local s = redis.call('GET', KEYS[1])
if not s then
  return 0
end
local gen, grant = string.match(s, '^o1:(%d+):(%x+):')
if grant ~= ARGV[2] or gen ~= ARGV[1] then
  return 2
end
redis.call('SET', KEYS[4], s)
redis.call('DEL', KEYS[1], KEYS[3])
redis.call('SET', KEYS[2], 'o1:' .. gen .. ':' .. grant .. ':' .. ARGV[3])
if not redis.call('HGET', KEYS[5], ARGV[4]) then
  redis.call('HSET', KEYS[5], ARGV[4], 'pending:0:0::' .. ARGV[5])
end
return 1
