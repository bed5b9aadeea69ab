-- Lean BatchPut (each mode), one function call per key (put_pre's body).
-- KEYS[i] key i; ARGV[1] now µs; ARGV[1 + i] record of key i (version now).
-- Returns one version (integer) or failure table per key.
local function put(k, v, now)
  local h = redis.pcall('GETRANGE', k, 0, 31)
  if type(h) == 'table' then return {'F', 'INVALID_STORED_VALUE', '', 'the key is not a string'} end
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
  redis.call('SET', k, v)
  return now
end
local now = tonumber(ARGV[1])
local out = {}
for i = 1, #KEYS do
  out[i] = put(KEYS[i], ARGV[i + 1], now)
end
return out
