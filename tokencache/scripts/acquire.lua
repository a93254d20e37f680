-- acquire.lua: take a user's refresh lease if nobody holds it.
-- KEYS[1]  the lease key, e.g. brokertoken:{USER}:lease
-- ARGV[1]  owner: unique to this attempt
-- ARGV[2]  lease TTL in milliseconds
-- Returns 0 when acquired, else the milliseconds left on the holder's lease (at least 1).
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 0
end
local left = redis.call('PTTL', KEYS[1])
if left == -1 then
  -- A lease without an expiry (written by hand?) would block everyone forever.
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return tonumber(ARGV[2])
end
if left < 1 then
  return 1
end
return left
