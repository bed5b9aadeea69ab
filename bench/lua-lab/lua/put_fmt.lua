-- Lean put, header built in Lua: GETRANGE of the header, one pattern check,
-- version = max(prev + 1, now), header by string.format + concatenation.
-- KEYS[1] key; ARGV[1] payload; ARGV[2] now in µs (service's estimate of
-- Redis's clock); ARGV[3] (optional) absolute expiry, Unix ms.
-- Returns the version (integer).
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
  redis.call('SET', k, '\255\2' .. string.format('%016.0f', now) .. string.format('%014.0f', tonumber(exp)) .. ARGV[1], 'PXAT', exp)
else
  redis.call('SET', k, '\255\2' .. string.format('%016.0f', now) .. '00000000000000' .. ARGV[1])
end
return now
