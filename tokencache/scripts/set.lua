-- set.lua: compare-and-set of a user's token record, then its announcement. It checks,
-- then writes, then announces: a refused write announces nothing.
-- KEYS[1]  the record key, e.g. brokertoken:{USER}:record
-- ARGV[1]  base: the version of the record this write replaces, as Go read it ("0": none
--          or no readable header); "-1" writes over whatever is stored
-- ARGV[2]  the record's JSON body; the script puts "v1:<version>:" before it
-- ARGV[3]  key TTL in milliseconds (positive)
-- ARGV[4]  pub/sub channel
-- ARGV[5]  login user, announced as "<version>:<user>"
-- ARGV[6..8] optional (with base "-1"): access token, md token and expiry (Unix ms) of
--          the token being set; when the stored record already holds exactly that token,
--          nothing is written or announced.
-- Returns {1, version} when written ({1, version, error} if the announcement failed); {0, stored version, stored value} when the stored
-- record is not the base (another write won: the caller adopts what is stored);
-- {2, stored version, stored value} when the token set is already stored.
--
-- The header grammar is the one tokencache/record.go parses: "v1:" then 1 to 16 digits
-- without a leading zero, then ":". Any other "v<digits>:" is a format this script does
-- not know: it refuses to overwrite it. A version more than a day past the server's
-- clock is corrupt: compared as written (so a caller that read it may replace it), but
-- never counted from. Versions are max(stored + 1, server time in µs): they keep rising
-- after a record expired or Redis lost its data, and stay below 2^53, so Lua's doubles
-- hold them exactly.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local ttl = tonumber(ARGV[3])
if not ttl or ttl <= 0 or ttl > 40000000000 then
  return redis.error_reply('ERR tokencache set.lua: TTL ' .. tostring(ARGV[3]) .. ' ms out of range')
end
if redis.acl_check_cmd and not redis.acl_check_cmd('PUBLISH', ARGV[4], 'x') then
  return redis.error_reply('NOPERM this user may not PUBLISH to channel ' .. ARGV[4] ..
    ': a writer needs it to announce tokens (ACL &' .. ARGV[4] .. ')')
end

local raw = redis.call('GET', KEYS[1])
local cur, count = '0', 0
if raw then
  local vs = string.match(raw, '^v1:([1-9]%d*):')
  if vs and #vs <= 16 then
    cur = vs
    local n = tonumber(vs)
    if n <= now + 86400000000 then
      count = n
    end
  elseif not vs then
    local f = string.match(raw, '^v(%d+):')
    if f and f ~= '1' then
      return redis.error_reply('BTFORMAT ' .. KEYS[1] .. ' holds a token record of format v' .. f ..
        ', which this version of tokencache does not know; it is left as it is')
    end
  end
end
if ARGV[6] and count > 0 and string.sub(raw, #cur + 5, #cur + 4 + #ARGV[6]) == ARGV[6] then
  return {2, cur, raw}
end
if ARGV[1] ~= '-1' and cur ~= ARGV[1] then
  return {0, cur, raw}
end
local vs = string.format('%d', math.max(count + 1, now))
redis.call('SET', KEYS[1], 'v1:' .. vs .. ':' .. ARGV[2], 'PX', ttl)
-- The write stands even if the announcement fails (only on servers without
-- redis.acl_check_cmd, checked above on Redis 7): other processes then find it by
-- MaxStaleness, and the caller is told.
local sent = redis.pcall('PUBLISH', ARGV[4], vs .. ':' .. ARGV[5])
if type(sent) == 'table' and sent.err then
  return {1, vs, sent.err}
end
return {1, vs}
