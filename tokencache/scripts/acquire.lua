-- acquire.lua: take a user's refresh lease if nobody holds it, and read the user's
-- record in the same round trip (the holder must look at it again under the lease).
-- KEYS[1]  the lease key, e.g. brokertoken:{USER}:lease
-- KEYS[2]  the record key, e.g. brokertoken:{USER}:token (same hash slot)
-- ARGV[1]  owner: unique to this attempt
-- ARGV[2]  lease TTL in milliseconds
-- Returns {0, record} when acquired, else {milliseconds left on the holder's lease (at
-- least 1), record}; record is nil when there is none.
local rec = redis.call('GET', KEYS[2])
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {0, rec}
end
local left = redis.call('PTTL', KEYS[1])
if left == -1 then
  -- A lease without an expiry (written by hand?) would block everyone forever.
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {tonumber(ARGV[2]), rec}
end
if left < 1 then
  left = 1
end
return {left, rec}
