-- release.lua: compare-and-delete of a lease, so a holder never frees someone else's.
-- KEYS[1]  the lease key
-- ARGV[1]  owner
-- Returns 1 when released, 0 when the lease was not held by owner.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
