-- Lean BatchPut (each mode), per-key work inlined in the loop, library
-- functions in locals. Same arguments and reply as batch_fn.
local call, pcall_, find, sub, fmt = redis.call, redis.pcall, string.find, string.sub, string.format
local now = tonumber(ARGV[1])
local out = {}
for i = 1, #KEYS do
  local k, v, ver = KEYS[i], ARGV[i + 1], now
  local h = pcall_('GETRANGE', k, 0, 31)
  if type(h) == 'table' then
    out[i] = {'F', 'INVALID_STORED_VALUE', '', 'the key is not a string'}
  elseif h ~= '' and (#h < 32 or not find(h, '^\255\2%d+$')) then
    out[i] = {'F', 'INVALID_STORED_VALUE', '', 'the value has no state-service header'}
  else
    if h ~= '' then
      local prev = tonumber(sub(h, 3, 18))
      if prev >= ver then
        ver = prev + 1
        v = '\255\2' .. fmt('%016.0f', ver) .. sub(v, 19)
      end
    end
    call('SET', k, v)
    out[i] = ver
  end
end
return out
