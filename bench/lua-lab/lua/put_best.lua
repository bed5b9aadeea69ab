-- put_pre with every small lever that measured as a gain: GETRANGE offsets
-- as strings, versions compared as 16-digit strings (equal-length digit
-- strings order as their numbers), the version returned as it came (a
-- string) in the common path.
-- KEYS[1] key; ARGV[1] record '\255\2' .. now(16) .. expiry(14) .. payload;
-- ARGV[2] now as 16 digits (the version in ARGV[1]); ARGV[3] (optional)
-- expiry for PXAT. Returns the version (16 digits).
local k = KEYS[1]
local v = ARGV[1]
local now = ARGV[2]
local h = redis.call('GETRANGE', k, '0', '31')
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
