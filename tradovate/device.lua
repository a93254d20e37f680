-- device.lua: give a user the fleet's deviceId, writing it only if none is stored.
--
-- Tradovate wants one deviceId per device, the same every time; a fleet that shares a
-- login is one device. The first process to log a user in stores its candidate; every
-- later call returns the stored value, so the id never changes once written. A process
-- that remembers the id it used before (after Redis lost its data) passes that one, so
-- the fleet's id survives the loss as long as one process remembers it.
--
-- KEYS[1]  the device key, "<Namespace>:{<user>}:device". One key only, so it runs on
--          Cluster.
-- ARGV[1]  the candidate deviceId (1 to 64 characters)
--
-- Returns the deviceId stored under KEYS[1] after the call: the existing one, or
-- ARGV[1] when there was none. The key has no expiry.
local current = redis.call('GET', KEYS[1])
if current then
  return current
end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]
