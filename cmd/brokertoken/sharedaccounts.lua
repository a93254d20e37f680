-- Shares a broker's answer to "which accounts has this user" between the daemons: the
-- answer asked for last wins, whichever daemon stores it first.
-- KEYS[1]  {prefix}:{USER}:accounts, a hash: at_us (when the broker was asked, µs since
--          the epoch), names (JSON array of the accounts), daemon (who asked), at (the
--          same time, RFC 3339, for people)
-- ARGV[1]  at_us of this answer; ARGV[2] names; ARGV[3] daemon; ARGV[4] at
-- Stores the answer unless one asked for later is stored, and returns the newest stored
-- answer as {at_us, names}.
local all = redis.call('HGETALL', KEYS[1])
local cur = {}
for i = 1, #all, 2 do
  cur[all[i]] = all[i + 1]
end
-- A stored answer wins only if it is one: names a JSON array, and asked for no later
-- than an hour past Redis's clock (one from another version or a clock far ahead must
-- not pin the fleet's view for good).
local t = redis.call('TIME')
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local at = tonumber(cur.at_us)
local function islist(v) -- a JSON array of strings (an empty one included)
  if type(v) ~= 'table' then return false end
  local n = 0
  for _ in pairs(v) do n = n + 1 end
  for i = 1, n do
    if type(v[i]) ~= 'string' then return false end
  end
  return true
end
local ok, decoded = pcall(cjson.decode, cur.names or '')
if ok and islist(decoded) and at and at <= now_us + 3600000000 and at > tonumber(ARGV[1]) then
  return {cur.at_us, cur.names}
end
redis.call('HSET', KEYS[1], 'at_us', ARGV[1], 'names', ARGV[2], 'daemon', ARGV[3], 'at', ARGV[4])
return {ARGV[1], ARGV[2]}
