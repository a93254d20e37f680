-- consume_state.lua: read and delete a login state, so that it works once across
-- every process.
--
-- KEYS[1]  the state "<Prefix>:oauth:state:<state>"
--
-- Returns the state's value, or false when it is unknown, expired or used.
local v = redis.call('GET', KEYS[1])
if v then
  redis.call('DEL', KEYS[1])
end
return v
