-- put_pre comparing the 16-digit versions as strings (no tonumber); returns
-- the version as a 16-digit string. ARGV[2] is now as 16 digits.
local k = KEYS[1]
local v = ARGV[1]
local now = ARGV[2]
local h = redis.call('GETRANGE', k, 0, 31)
if h ~= '' then
  if #h < 32 or not string.find(h, '^\255\2%d+$') then
    return {'F', 'INVALID_STORED_VALUE', '', 'the value has no state-service header'}
  end
  local prev = string.sub(h, 3, 18)
  if prev >= now then
    now = string.format('%016.0f', tonumber(prev) + 1)
    v = '\255\2' .. now .. string.sub(v, 19)
  end
end
if ARGV[3] then
  redis.call('SET', k, v, 'PXAT', ARGV[3])
else
  redis.call('SET', k, v)
end
return now
