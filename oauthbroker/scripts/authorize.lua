-- authorize.lua: store the tokens of a human's authorization, a new grant replacing
-- whatever was stored (a revoked grant, an older one), if the newest generation is
-- still the one the caller read. The alerts of earlier grants go with them.
--
-- KEYS[1]  the secret record   "<Prefix>:secret:{<User>}:oauth"
-- KEYS[2]  the status record   "<Prefix>:{<User>}:oauth"
-- KEYS[3]  the rotation marker "<Prefix>:{<User>}:oauth:rotation"
-- KEYS[4]  the alerts          "<Prefix>:{<User>}:oauth:alerts"
-- ARGV[1]  the newest generation the caller read (0: none)
-- ARGV[2]  the new secret record, of generation ARGV[1] + 1 and a new grant
-- ARGV[3]  the new status record, of generation ARGV[1] + 1 and that grant
--
-- Returns -1 when stored, -2 when a record of a newer format is stored (left alone),
-- else the newest generation now (the caller reads again).
local function newer(v)
  return v and string.match(v, '^o%d+:') and not string.match(v, '^o1:')
end
local function gen(v)
  if not v then return 0 end
  return tonumber(string.match(v, '^o1:(%d+):') or '0')
end
local sec, st = redis.call('GET', KEYS[1]), redis.call('GET', KEYS[2])
if newer(sec) or newer(st) then
  return -2
end
local newest = math.max(gen(sec), gen(st))
if newest ~= tonumber(ARGV[1]) then
  return newest
end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('SET', KEYS[2], ARGV[3])
redis.call('DEL', KEYS[3], KEYS[4])
return -1
