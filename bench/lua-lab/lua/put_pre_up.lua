local find, sub, fmt = string.find, string.sub, string.format
-- put_pre with string functions in locals (the line above: per call under
-- EVALSHA; hoisted to the library, i.e. upvalues set once, under FCALL).
local k = KEYS[1]
local v = ARGV[1]
local now = tonumber(ARGV[2])
local h = redis.call('GETRANGE', k, 0, 31)
if h ~= '' then
  if #h < 32 or not find(h, '^\255\2%d+$') then
    return {'F', 'INVALID_STORED_VALUE', '', 'the value has no state-service header'}
  end
  local prev = tonumber(sub(h, 3, 18))
  if prev >= now then
    now = prev + 1
    v = '\255\2' .. fmt('%016.0f', now) .. sub(v, 19)
  end
end
if ARGV[3] then
  redis.call('SET', k, v, 'PXAT', ARGV[3])
else
  redis.call('SET', k, v)
end
return now
