-- Sound `SET … GET` put (no TTL in the request): one command writes the
-- prebuilt record and returns the old value; KEEPTTL so that a foreign
-- string can be put back exactly (value and TTL), PERSIST when the old
-- record had an expiry. Reads the WHOLE old value.
-- KEYS[1] key; ARGV[1] record; ARGV[2] now in µs.
local k = KEYS[1]
local v = ARGV[1]
local now = tonumber(ARGV[2])
local old = redis.call('SET', k, v, 'KEEPTTL', 'GET')
if not old then return now end
if #old < 32 or not string.find(old, '^\255\2%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d') then
  redis.call('SET', k, old, 'KEEPTTL')
  return {'F', 'INVALID_STORED_VALUE', '', 'the value has no state-service header'}
end
local prev = tonumber(string.sub(old, 3, 18))
if prev >= now then
  now = prev + 1
  redis.call('SET', k, '\255\2' .. string.format('%016.0f', now) .. string.sub(v, 19), 'KEEPTTL')
end
if string.sub(old, 19, 32) ~= '00000000000000' then redis.call('PERSIST', k) end
return now
