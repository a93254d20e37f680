-- commit.lua: store the tokens a refresh obtained, if the refresh token it used is
-- still the stored one and no other process took its claim over.
--
-- KEYS[1]  the secret record   "<Prefix>:secret:{<User>}:oauth"
-- KEYS[2]  the status record   "<Prefix>:{<User>}:oauth"
-- KEYS[3]  the rotation marker "<Prefix>:{<User>}:oauth:rotation"
-- ARGV[1]  the generation the refresh started from
-- ARGV[2]  the caller's owner id
-- ARGV[3]  the new secret record (generation ARGV[1] + 1)
-- ARGV[4]  the new status record
--
-- When Redis holds neither record (it restarted empty while the refresh ran), the
-- tokens are stored too: they are the only valid ones left.
--
-- Returns {'ok'} or {'superseded', <why>}. Storing the same rotation again (a retry
-- whose first reply was lost) answers {'ok'}.
local s = redis.call('GET', KEYS[1])
if s == ARGV[3] then
  return {'ok'}
end
if s then
  if string.match(s, '^o1:(%d+):') ~= ARGV[1] then
    return {'superseded', 'the stored refresh token changed meanwhile'}
  end
elseif redis.call('GET', KEYS[2]) then
  return {'superseded', 'the refresh token was refused or replaced meanwhile'}
end
local c = redis.call('GET', KEYS[3])
if c then
  local cgen, owner = string.match(c, '^(%d+):%d+:%d+:(.+)$')
  if cgen == ARGV[1] and owner ~= ARGV[2] then
    return {'superseded', 'another process took the refresh over'}
  end
end
redis.call('SET', KEYS[1], ARGV[3])
redis.call('SET', KEYS[2], ARGV[4])
redis.call('DEL', KEYS[3])
return {'ok'}
