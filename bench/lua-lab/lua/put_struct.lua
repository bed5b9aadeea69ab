-- put_pre with a binary header (lab magic '\255\4'): version and expiry as
-- big-endian 8-byte integers (struct.pack '>I8'), 18 bytes in all.
-- KEYS[1] key; ARGV[1] record '\255\4' .. pack(now) .. pack(expiry) .. payload;
-- ARGV[2] now in µs; ARGV[3] (optional) expiry for PXAT.
local k = KEYS[1]
local v = ARGV[1]
local now = tonumber(ARGV[2])
local h = redis.call('GETRANGE', k, 0, 17)
if h ~= '' then
  local a, b = string.byte(h, 1, 2)
  if #h < 18 or a ~= 255 or b ~= 4 then
    return {'F', 'INVALID_STORED_VALUE', '', 'the value has no state-service header'}
  end
  local prev = struct.unpack('>I8', h, 3)
  if prev >= now then
    now = prev + 1
    v = '\255\4' .. struct.pack('>I8', now) .. string.sub(v, 11)
  end
end
if ARGV[3] then
  redis.call('SET', k, v, 'PXAT', ARGV[3])
else
  redis.call('SET', k, v)
end
return now
