-- put_pre passing GETRANGE's offsets as strings ('0', '31'): a Lua number
-- argument of redis.call is formatted by Lua ('%.14g') on every call.
local k = KEYS[1]
local v = ARGV[1]
local now = tonumber(ARGV[2])
local h = redis.call('GETRANGE', k, '0', '31')
if h ~= '' then
  if #h < 32 or not string.find(h, '^\255\2%d+$') then
    return {'F', 'INVALID_STORED_VALUE', '', 'the value has no state-service header'}
  end
  local prev = tonumber(string.sub(h, 3, 18))
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
