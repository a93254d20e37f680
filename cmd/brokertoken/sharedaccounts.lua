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
if cur.names and tonumber(cur.at_us) and tonumber(cur.at_us) > tonumber(ARGV[1]) then
  return {cur.at_us, cur.names}
end
redis.call('HSET', KEYS[1], 'at_us', ARGV[1], 'names', ARGV[2], 'daemon', ARGV[3], 'at', ARGV[4])
return {ARGV[1], ARGV[2]}
