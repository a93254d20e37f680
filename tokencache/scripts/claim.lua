-- claim.lua: claim the legacy keys (token:{account}, auth:{user}, ...) for one prefix.
-- Those keys carry no prefix, so two fleets with different prefixes writing them would
-- overwrite each other's tokens; the claim makes one prefix their owner.
-- KEYS[1]  the claim key, "brokertoken:legacy-owner"
-- ARGV[1]  the claiming prefix
-- ARGV[2]  claim TTL in milliseconds (renewed while the owner runs)
-- Returns "" when the claim is ARGV[1]'s (taken or renewed), else the owning prefix.
local owner = redis.call('GET', KEYS[1])
if owner and owner ~= ARGV[1] then
  return owner
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return ''
