-- commit.lua: store the tokens a refresh obtained, if the refresh token it used is
-- still the stored one (same generation and same grant) and no other process took its
-- claim over.
--
-- KEYS[1]  the secret record   "<Prefix>:secret:{<User>}:oauth"
-- KEYS[2]  the status record   "<Prefix>:{<User>}:oauth"
-- KEYS[3]  the rotation marker "<Prefix>:{<User>}:oauth:rotation"
-- ARGV[1]  the generation the refresh started from
-- ARGV[2]  the grant the refresh started from
-- ARGV[3]  the caller's owner id
-- ARGV[4]  the new secret record (generation ARGV[1] + 1, grant ARGV[2])
-- ARGV[5]  the new status record
--
-- When Redis holds no secret (it lost its data while the refresh ran), the tokens are
-- stored too, if no status says otherwise (none, or this grant marked lost): they are
-- the only valid ones left. After a new authorization (another grant), they are not:
-- generations restart at 1 after a data loss, and only the grant tells them apart.
--
-- Returns {'ok'} or {'superseded', <why>}. Storing the same rotation again (a retry
-- whose first reply was lost) answers {'ok'}.
local s = redis.call('GET', KEYS[1])
if s == ARGV[4] then
  return {'ok'}
end
if s then
  local gen, grant = string.match(s, '^o1:(%d+):(%x+):')
  if grant ~= ARGV[2] then
    return {'superseded', 'another grant was stored meanwhile (a new authorization)'}
  end
  if gen ~= ARGV[1] then
    return {'superseded', 'the stored refresh token changed meanwhile'}
  end
else
  local st = redis.call('GET', KEYS[2])
  if st then
    local grant = string.match(st, '^o1:%d+:(%x+):')
    if grant ~= ARGV[2] or not string.find(st, '"state":"lost"', 1, true) then
      return {'superseded', 'the refresh token was refused or replaced meanwhile'}
    end
  end
end
local c = redis.call('GET', KEYS[3])
if c then
  local cgen, cgrant, owner = string.match(c, '^(%d+):(%x+):%d+:%d+:(.+)$')
  if cgen == ARGV[1] and cgrant == ARGV[2] and owner ~= ARGV[3] then
    return {'superseded', 'another process took the refresh over'}
  end
end
redis.call('SET', KEYS[1], ARGV[4])
redis.call('SET', KEYS[2], ARGV[5])
redis.call('DEL', KEYS[3])
return {'ok'}
