-- As put_fmt, but the whole record by one string.format (no `..`).
local k = KEYS[1]
local h = redis.call('GETRANGE', k, 0, 31)
local now = tonumber(ARGV[2])
if h ~= '' then
  if #h < 32 or not string.find(h, '^\255\2%d+$') then
    return {'F', 'INVALID_STORED_VALUE', '', 'the value has no state-service header'}
  end
  local prev = tonumber(string.sub(h, 3, 18))
  if prev >= now then now = prev + 1 end
end
local exp = ARGV[3]
if exp then
  redis.call('SET', k, string.format('\255\2%016.0f%014.0f%s', now, tonumber(exp), ARGV[1]), 'PXAT', exp)
else
  redis.call('SET', k, string.format('\255\2%016.0f00000000000000%s', now, ARGV[1]))
end
return now
