-- As put_fmt, but now from one TIME call instead of ARGV[2] (ARGV[2] ignored).
local k = KEYS[1]
local h = redis.call('GETRANGE', k, 0, 31)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
if h ~= '' then
  if #h < 32 or not string.find(h, '^\255\2%d+$') then
    return {'F', 'INVALID_STORED_VALUE', '', 'the value has no state-service header'}
  end
  local prev = tonumber(string.sub(h, 3, 18))
  if prev >= now then now = prev + 1 end
end
local exp = ARGV[3]
if exp then
  redis.call('SET', k, '\255\2' .. string.format('%016.0f', now) .. string.format('%014.0f', tonumber(exp)) .. ARGV[1], 'PXAT', exp)
else
  redis.call('SET', k, '\255\2' .. string.format('%016.0f', now) .. '00000000000000' .. ARGV[1])
end
return now
