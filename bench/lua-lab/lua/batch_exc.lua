-- batch_inline replying only with the exceptions: {} when every key got
-- version = now (the common case), else {i, version-or-failure, …}.
-- Keys of another type: redis.call raises WRONGTYPE, so every GETRANGE runs
-- before the first SET (nothing written when one raises; the service then
-- retries that batch with batch_inline's per-key pcall).
local call, find, sub, fmt = redis.call, string.find, string.sub, string.format
local now = tonumber(ARGV[1])
local n = #KEYS
local hs = {}
for i = 1, n do hs[i] = call('GETRANGE', KEYS[i], 0, 31) end
local out = {}
for i = 1, n do
  local h, v = hs[i], ARGV[i + 1]
  if h == '' then
    call('SET', KEYS[i], v)
  elseif #h < 32 or not find(h, '^\255\2%d+$') then
    out[#out + 1] = i
    out[#out + 1] = {'F', 'INVALID_STORED_VALUE', '', 'the value has no state-service header'}
  else
    local prev = tonumber(sub(h, 3, 18))
    if prev >= now then
      v = '\255\2' .. fmt('%016.0f', prev + 1) .. sub(v, 19)
      out[#out + 1] = i
      out[#out + 1] = prev + 1
    end
    call('SET', KEYS[i], v)
  end
end
return out
