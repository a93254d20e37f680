-- check.lua: right before a refresh token is sent, ask Redis's clock whether the
-- caller's claim still stands: a pause the local clock does not count (a suspended
-- VM) or a takeover must not let a request reach the provider after another process
-- may have sent the same refresh token.
--
-- KEYS[1]  the rotation marker "<Prefix>:{<User>}:oauth:rotation"
-- ARGV[1]  the generation claimed
-- ARGV[2]  the grant claimed
-- ARGV[3]  the caller's owner id
-- ARGV[4]  margin, ms: the request must be over this long before the deadline
--
-- Returns the ms left until deadline - margin (> 0) when the marker is still the
-- caller's claim of that generation and grant, 0 when it is but too little time is
-- left, -1 when it is not the caller's claim any more.
local c = redis.call('GET', KEYS[1])
if not c then
  return -1
end
local cgen, cgrant, deadline, _, owner = string.match(c, '^(%d+):(%x+):(%d+):(%d+):(.+)$')
if cgen ~= ARGV[1] or cgrant ~= ARGV[2] or owner ~= ARGV[3] then
  return -1
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local left = tonumber(deadline) - tonumber(ARGV[4]) - now
if left <= 0 then
  return 0
end
return left
