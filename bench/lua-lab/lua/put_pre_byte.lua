-- put_pre with the magic checked by string.byte and the digits not checked
-- beyond tonumber (today's strictness), instead of one string.find.
local k = KEYS[1]
local v = ARGV[1]
local now = tonumber(ARGV[2])
local h = redis.call('GETRANGE', k, 0, 31)
if h ~= '' then
  local a, b = string.byte(h, 1, 2)
  local prev = #h == 32 and a == 255 and b == 2 and tonumber(string.sub(h, 3, 18))
  if not prev or not tonumber(string.sub(h, 19, 32)) then
    return {'F', 'INVALID_STORED_VALUE', '', 'the value has no state-service header'}
  end
  if prev >= now then
    now = prev + 1
    v = '\255\2' .. string.format('%016.0f', now) .. string.sub(v, 19)
  end
end
if ARGV[3] then
  redis.call('SET', k, v, 'PXAT', ARGV[3])
else
  redis.call('SET', k, v)
end
return now
