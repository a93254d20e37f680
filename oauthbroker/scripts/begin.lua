-- begin.lua: claim the user's refresh token for one refresh, so that one process at a
-- time sends it to the provider (see rotate.go for the whole protocol).
--
-- KEYS[1]  the secret record   "<Prefix>:secret:{<User>}:oauth"  ("o1:<gen>:<grant>:<json>")
-- KEYS[2]  the status record   "<Prefix>:{<User>}:oauth"
-- KEYS[3]  the rotation marker "<Prefix>:{<User>}:oauth:rotation"
--          ("<gen>:<grant>:<deadline ms>:<stale-seen ms>:<owner>", Redis time)
-- ARGV[1]  the caller's owner id
-- ARGV[2]  hold, ms: how long the caller may be using the refresh token
-- ARGV[3]  takeover, ms: how long a marker whose deadline passed is still respected,
--          counted from when a process first saw it passed (its owner may be alive and
--          storing the result after a Redis outage)
-- ARGV[4]  how long a marker is kept at most, ms (it records an interrupted refresh)
--
-- A marker of the stored generation and grant is respected whoever owns it, the
-- caller included: a refresh of this process that got no answer may still be at the
-- provider.
--
-- Returns
--   {'none', <status or false>}     no refresh token stored
--   {'busy', <wait ms>, <marker>}   a process may be using the refresh token now
--   {'ok', <secret>, <now ms>, <earlier marker of this generation or false>}
--                                   claimed; an earlier marker means an earlier refresh
--                                   with this refresh token did not finish cleanly
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local s = redis.call('GET', KEYS[1])
if not s then
  return {'none', redis.call('GET', KEYS[2])}
end
local gen, grant = string.match(s, '^o1:(%d+):(%x+):')
if not gen then
  return {'ok', s, now, false} -- unreadable: Go refuses it and claims nothing useful
end
local c = redis.call('GET', KEYS[3])
local earlier = false
if c then
  local cgen, cgrant, deadline, seen, owner = string.match(c, '^(%d+):(%x+):(%d+):(%d+):(.+)$')
  if cgen == gen and cgrant == grant then
    earlier = c
    deadline, seen = tonumber(deadline), tonumber(seen)
    local takeover = tonumber(ARGV[3])
    if now < deadline then
      return {'busy', deadline - now + takeover, c}
    end
    if seen == 0 then
      redis.call('SET', KEYS[3], cgen .. ':' .. cgrant .. ':' .. deadline .. ':' .. now .. ':' .. owner, 'PX', ARGV[4])
      return {'busy', takeover, c}
    end
    if now < seen + takeover then
      return {'busy', seen + takeover - now, c}
    end
  end
end
redis.call('SET', KEYS[3], gen .. ':' .. grant .. ':' .. (now + tonumber(ARGV[2])) .. ':0:' .. ARGV[1], 'PX', ARGV[4])
return {'ok', s, now, earlier}
