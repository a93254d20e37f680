-- refresh_drop.lua: forget a refresh token Kite refused, unless another process has
-- stored a newer one meanwhile (a human's login, or a rotation by a renewal).
--
-- KEYS[1]  the refresh token key, "<Prefix>:secret:{<User>}:refresh"
-- ARGV[1]  the refused refresh token
--
-- Returns 1 when the key held ARGV[1] and was deleted, else 0.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
