-- alerts.lua: the user's alerts, delivered at least once and deduplicated across the
-- fleet. Each is a field of the hash KEYS[1] named "<kind>:<grant>:<rest>" whose value
-- is "<state>:<until ms>:<deliveries>:<claim id>:<payload JSON>", state one of
--   pending  recorded, nobody delivers it yet
--   claimed  a process is delivering it until <until> (Redis time); after that,
--            another may claim it and deliver it again
--   done     acknowledged: never delivered again
--
-- KEYS[1]  the alerts "<Prefix>:{<User>}:oauth:alerts"
-- ARGV[1]  'claim', 'ack' or 'add'
-- claim:   ARGV[2] claim id, ARGV[3] lease ms, ARGV[4] the current grant (entries of
--          other grants are deleted; '' keeps them), ARGV[5] claim only this field
--          ('' any), then pairs of ARGV: a field and a value to add when absent
--          Returns {field, value, ...} of the entries claimed by this call.
-- ack:     ARGV[2] field, ARGV[3] claim id
--          Returns 1 when the entry was this claim's, 0 otherwise (acknowledged
--          already, or claimed again by another process since); either way it is done.
-- add:     ARGV[2] field, ARGV[3] value, added when absent. Returns 1 when added.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local all = redis.call('HGETALL', KEYS[1])
local entries = {}
for i = 1, #all, 2 do
  entries[all[i]] = all[i + 1]
end
local function parse(v)
  return string.match(v, '^(%a+):(%d+):(%d+):([^:]*):(.*)$')
end
local op = ARGV[1]
if op == 'add' then
  if entries[ARGV[2]] then
    return 0
  end
  redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
  return 1
end
if op == 'ack' then
  local v = entries[ARGV[2]]
  if not v then
    return 0
  end
  local state, _, n, id, payload = parse(v)
  if not state then
    return 0
  end
  redis.call('HSET', KEYS[1], ARGV[2], 'done:' .. now .. ':' .. n .. ':' .. id .. ':' .. payload)
  if state == 'claimed' and id == ARGV[3] then
    return 1
  end
  return 0
end
for i = 6, #ARGV, 2 do
  if not entries[ARGV[i]] then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
    entries[ARGV[i]] = ARGV[i + 1]
  end
end
local out = {}
for field, v in pairs(entries) do
  local grant = string.match(field, '^%a+:(%x+):')
  if ARGV[4] ~= '' and grant ~= ARGV[4] then
    redis.call('HDEL', KEYS[1], field)
  elseif ARGV[5] == '' or ARGV[5] == field then
    local state, until_ms, n, _, payload = parse(v)
    if state == 'pending' or (state == 'claimed' and tonumber(until_ms) <= now) then
      local claimed = 'claimed:' .. (now + tonumber(ARGV[3])) .. ':' .. (tonumber(n) + 1) .. ':' .. ARGV[2] .. ':' .. payload
      redis.call('HSET', KEYS[1], field, claimed)
      out[#out + 1] = field
      out[#out + 1] = claimed
    end
  end
end
return out
