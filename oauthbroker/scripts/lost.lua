-- lost.lua: record that a user's grant is gone from Redis although it had one (Redis
-- lost its data, or evicted the secret): the status says so, for every process and
-- every reader, and the alert is recorded as pending (see alerts.lua), until a human
-- authorizes again or the process holding a rotation of the grant stores it.
--
-- KEYS[1]  the secret record   "<Prefix>:secret:{<User>}:oauth"
-- KEYS[2]  the status record   "<Prefix>:{<User>}:oauth"
-- KEYS[3]  the alerts          "<Prefix>:{<User>}:oauth:alerts"
-- ARGV[1]  the status the caller read ('' none): nothing is written if it changed
-- ARGV[2]  the new status record (state "lost")
-- ARGV[3]  the alert's field ("lost:<grant>:<generation>")
-- ARGV[4]  the alert's payload (JSON)
--
-- Returns 1 when written, 0 when a secret is stored or the status changed meanwhile.
if redis.call('GET', KEYS[1]) then
  return 0
end
if (redis.call('GET', KEYS[2]) or '') ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[2], ARGV[2])
if not redis.call('HGET', KEYS[3], ARGV[3]) then
  redis.call('HSET', KEYS[3], ARGV[3], 'pending:0:0::' .. ARGV[4])
end
return 1
