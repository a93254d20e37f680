-- set.lua: compare-and-set of a user's token record, with the record message and the
-- invalidation message. Both PUBLISHes run before the SET, so a client not allowed to
-- publish on a channel (an ACL) gets an error with nothing written.
-- KEYS[1]  the record key, e.g. brokertoken:{USER}:token
-- ARGV[1]  base version: the version of the record this write replaces (0 = no record);
--          -1 writes whatever is stored
-- ARGV[2]  the record as a JSON object without its version: {"a":...}
-- ARGV[3]  key TTL in milliseconds
-- ARGV[4]  pub/sub channel
-- ARGV[5]  login user, sent in the message as "<version>:<user>"
-- ARGV[6]  records channel: gets "<version>:<user>\n<record>" first, so a process that
--          hears it has the token without reading it back
-- ARGV[7..9] optional (with base -1): access token, md token and expiry (Unix ms) of the
--          token being set; when the stored record already holds exactly that token,
--          nothing is written or published.
-- Returns {1, new version} when written, {0, stored version} when the stored record is
-- not the base (a newer write won), {2, stored version, record} when the token set is
-- already stored. A version is max(stored + 1, server time in µs), so
-- versions keep increasing even after the record expired or Redis lost its data (two
-- scripts never run within the same microsecond).
local cur = 0
local raw = redis.call('GET', KEYS[1])
if raw then
  local v = string.match(raw, '^{"v":(%d+)')
  if v then
    cur = tonumber(v)
  end
end
local base = tonumber(ARGV[1])
if base >= 0 and cur ~= base then
  return {0, cur}
end
if raw and cur > 0 and ARGV[7] then
  local ok, r = pcall(cjson.decode, raw)
  if ok and type(r) == 'table' and r.a == ARGV[7] and (r.m or '') == ARGV[8]
      and tonumber(r.e) == tonumber(ARGV[9]) then
    return {2, cur, raw}
  end
end
local t = redis.call('TIME')
local v = math.max(cur + 1, tonumber(t[1]) * 1000000 + tonumber(t[2]))
local vs = string.format('%d', v)
local rec = '{"v":' .. vs .. ',' .. string.sub(ARGV[2], 2)
redis.call('PUBLISH', ARGV[6], vs .. ':' .. ARGV[5] .. '\n' .. rec)
redis.call('PUBLISH', ARGV[4], vs .. ':' .. ARGV[5])
redis.call('SET', KEYS[1], rec, 'PX', ARGV[3])
return {1, v}
