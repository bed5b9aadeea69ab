-- Lean put, record built by the service (the candidate): the service sends
-- the whole stored string with version = now already in its header; Lua
-- only checks the old header and, when the old version is not below now
-- (rare: same µs, or this service's clock estimate behind another's),
-- rewrites the 16 version digits.
-- KEYS[1] key; ARGV[1] record '\255\2' .. now(16) .. expiry(14) .. payload;
-- ARGV[2] now in µs (the version in ARGV[1]); ARGV[3] (optional) the
-- expiry again, for PXAT. Returns the version (integer).
-- A key of another type raises WRONGTYPE from GETRANGE before anything is
-- written (the service maps it to INVALID_STORED_VALUE).
local k = KEYS[1]
local v = ARGV[1]
local now = tonumber(ARGV[2])
local h = redis.call('GETRANGE', k, 0, 31)
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
