-- extend.lua: push a held lease's expiry out while its holder is still working.
-- KEYS[1]  the lease key
-- ARGV[1]  owner
-- ARGV[2]  new TTL in milliseconds
-- Returns 1 when extended, 0 when the lease is no longer held by owner.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
