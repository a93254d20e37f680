-- acquire.lua: take a user's refresh lease if nobody holds it, and read the user's
-- record in the same round trip (the holder must look at it again under the lease).
-- KEYS[1]  the lease key, e.g. brokertoken:{USER}:lease
-- KEYS[2]  the record key, e.g. brokertoken:{USER}:record (same hash slot)
-- ARGV[1]  owner: unique to this attempt
-- ARGV[2]  lease TTL in milliseconds
-- ARGV[3]  the announcement channel
-- Returns {0, record} when acquired, else {milliseconds left on the holder's lease (at
-- least 1), record}; record is nil when there is none.
--
-- On Redis 7 it first checks that this user may do what the holder must do after
-- obtaining a token (SET the record, PUBLISH the announcement), so a writer missing a
-- permission learns it before it spends a broker login, from an error naming it.
if redis.acl_check_cmd then
  if not redis.acl_check_cmd('SET', KEYS[2], 'x') then
    return redis.error_reply('NOPERM this user may not SET ' .. KEYS[2] ..
      ': a writer needs write access to the record keys (ACL ~' .. KEYS[2] .. ')')
  end
  if not redis.acl_check_cmd('PUBLISH', ARGV[3], 'x') then
    return redis.error_reply('NOPERM this user may not PUBLISH to channel ' .. ARGV[3] ..
      ': a writer needs it to announce tokens (ACL &' .. ARGV[3] .. ')')
  end
end
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
