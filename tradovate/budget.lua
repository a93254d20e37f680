-- budget.lua: take one login from the fleet-wide login budget, a sliding window.
--
-- Every process that shares the Redis and prefix calls this before each login request.
-- The window holds the times of the logins it granted; a login is granted only while
-- fewer than ARGV[1] were granted in the last ARGV[2] milliseconds, so no window of that
-- length ever holds more (a token bucket would let a full burst plus a window's refill
-- through, twice the broker's limit).
--
-- KEYS[1]  the budget key, a sorted set of grant times (ms) by member, e.g.
--          "brokertoken:tradovate:login-budget". One key only, so it runs on Cluster.
-- ARGV[1]  limit: logins allowed per window (integer >= 1)
-- ARGV[2]  window length in milliseconds (integer >= 1)
-- ARGV[3]  member: a unique id for this grant (random)
--
-- Returns 0 when the login is granted (and recorded), else how many milliseconds to
-- wait before the oldest grant leaves the window. Time is the Redis server's (TIME), so
-- processes with skewed clocks agree.
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) < limit then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], window)
  return 0
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local wait = tonumber(oldest[2]) + window - now
if wait < 1 then
  wait = 1
end
return wait
