-- put_pre + a version floor (issue 12): KEYS[2] holds a time T (µs) that the
-- scripts refresh at most once per FLOOR_PERIOD; after a failover to a
-- replica whose clock (or the service's estimate of it) is behind T,
-- versions restart from T + FLOOR_PERIOD, above anything issued before.
-- KEYS[1] key; KEYS[2] floor key (same slot); ARGV as put_pre.
-- The lab measures the GET of the floor on every write; the SET happens once
-- per period per floor key (ARGV[4] = period µs; 0: SET on every write).
local k = KEYS[1]
local v = ARGV[1]
local now = tonumber(ARGV[2])
local period = tonumber(ARGV[4])
local f = redis.call('GET', KEYS[2])
local t = f and tonumber(f) or 0
if now < t then
  now = t + period
  v = '\255\2' .. string.format('%016.0f', now) .. string.sub(v, 19)
elseif now - t >= period then
  redis.call('SET', KEYS[2], ARGV[2])
end
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
if ARGV[3] ~= '' then
  redis.call('SET', k, v, 'PXAT', ARGV[3])
else
  redis.call('SET', k, v)
end
return now
