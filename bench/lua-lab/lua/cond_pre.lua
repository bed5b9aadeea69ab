-- Lean conditional put (ifAbsent / ifExists / ifVersion) on a record built
-- by the service. KEYS[1] key; ARGV[1] record; ARGV[2] now µs; ARGV[3]
-- condition 'A' (absent), 'E' (exists) or 'V' (version = ARGV[4], 16
-- digits); ARGV[5] expiry for PXAT or ''.
-- Returns the version, or {'F', reason, current version}.
local k = KEYS[1]
local v = ARGV[1]
local now = tonumber(ARGV[2])
local c = ARGV[3]
local h = redis.call('GETRANGE', k, 0, 31)
if h == '' then
  if c ~= 'A' then return {'F', c == 'E' and 'NOT_FOUND' or 'VERSION_MISMATCH', ''} end
else
  if #h < 32 or not string.find(h, '^\255\2%d+$') then
    return {'F', 'INVALID_STORED_VALUE', '', 'the value has no state-service header'}
  end
  local cur = string.sub(h, 3, 18)
  if c == 'A' then return {'F', 'ALREADY_EXISTS', cur} end
  if c == 'V' and cur ~= ARGV[4] then return {'F', 'VERSION_MISMATCH', cur} end
  local prev = tonumber(cur)
  if prev >= now then
    now = prev + 1
    v = '\255\2' .. string.format('%016.0f', now) .. string.sub(v, 19)
  end
end
if ARGV[5] ~= '' then
  redis.call('SET', k, v, 'PXAT', ARGV[5])
else
  redis.call('SET', k, v)
end
return now
