-- put_pre + a change feed (issue 14): XADD to KEYS[2] with MAXLEN ~ ARGV[4]
-- (key and version; with ARGV[5] = 'v' the value too), and with ARGV[6] = 'z'
-- a ZSCORE of the key in the pending-expiry ZSET KEYS[3] (to drop or move its
-- entry when the write changes the expiry).
local k = KEYS[1]
local v = ARGV[1]
local now = tonumber(ARGV[2])
local ver = ARGV[2]
local h = redis.call('GETRANGE', k, 0, 31)
if h ~= '' then
  if #h < 32 or not string.find(h, '^\255\2%d+$') then
    return {'F', 'INVALID_STORED_VALUE', '', 'the value has no state-service header'}
  end
  local prev = tonumber(string.sub(h, 3, 18))
  if prev >= now then
    now = prev + 1
    ver = string.format('%016.0f', now)
    v = '\255\2' .. ver .. string.sub(v, 19)
  end
end
if ARGV[3] ~= '' then
  redis.call('SET', k, v, 'PXAT', ARGV[3])
else
  redis.call('SET', k, v)
end
if ARGV[6] == 'z' then redis.call('ZSCORE', KEYS[3], k) end
if ARGV[5] == 'v' then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'k', k, 'v', ver, 'd', v)
else
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'k', k, 'v', ver)
end
return now
