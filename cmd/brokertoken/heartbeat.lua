-- Records a daemon's heartbeat and forgets daemons that have been silent too long.
-- KEYS[1]  {prefix}:daemons, a hash of daemon id -> JSON description
-- ARGV[1]  the daemon's id
-- ARGV[2]  its description (JSON object); seen_ms is set here, from the server's clock
-- ARGV[3]  milliseconds of silence after which a daemon's field is removed
-- Returns the server's time in milliseconds.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local info = cjson.decode(ARGV[2])
info['seen_ms'] = now
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(info))
local all = redis.call('HGETALL', KEYS[1])
local forget = tonumber(ARGV[3])
for i = 1, #all, 2 do
  local ok, d = pcall(cjson.decode, all[i + 1])
  if not ok or type(d) ~= 'table' or type(d['seen_ms']) ~= 'number' or now - d['seen_ms'] > forget then
    redis.call('HDEL', KEYS[1], all[i])
  end
end
return now
