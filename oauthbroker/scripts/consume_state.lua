-- consume_state.lua: read and delete a login state, so that it works once across
-- every process; a state bound to a browser is consumed only by that browser.
--
-- KEYS[1]  the state "<Prefix>:oauth:state:<state>", valued "s1:<binding>:<json>"
--          (binding: the SHA-256 of the browser's cookie, hex; '' when unbound)
-- ARGV[1]  the binding the request presents ('' none)
-- ARGV[2]  '1' to require the binding of a bound state, '0' not to (a headless
--          completion, where a human pasted the redirect's query)
--
-- Returns {'ok', <value>}, {'none'} when the state is unknown, expired or used, or
-- {'mismatch'} when it is bound to another browser (it stays usable by that one).
local v = redis.call('GET', KEYS[1])
if not v then
  return {'none'}
end
local binding = string.match(v, '^s1:(%x*):')
if ARGV[2] == '1' and binding and binding ~= '' and binding ~= ARGV[1] then
  return {'mismatch'}
end
redis.call('DEL', KEYS[1])
return {'ok', v}
