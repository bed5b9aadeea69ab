-- BatchPut of values without TTL that never reads a whole old value: one
-- GETRANGE of the header per key (redis.call: a key of another type raises
-- before anything is written; the service then retries with batch_exc), per
-- key one pattern check and one 16-digit string compare, then one MSET.
-- Same arguments as batch_lean (ARGV[1] now as 16 digits); same reply.
local call, find, sub = redis.call, string.find, string.sub
local now = ARGV[1]
local a, out, j = {}, {}, 0
for i = 1, #KEYS do
  local k, v = KEYS[i], ARGV[i + 1]
  local h = call('GETRANGE', k, '0', '31')
  local ok = true
  if h ~= '' then
    if #h < 32 or not find(h, '^\255\2%d+$') then
      ok = false
      out[#out + 1] = i
      out[#out + 1] = {'F', 'INVALID_STORED_VALUE', '', 'the value has no state-service header'}
    elseif sub(h, 3, 18) >= now then
      local nv = string.format('%016.0f', tonumber(sub(h, 3, 18)) + 1)
      v = '\255\2' .. nv .. sub(v, 19)
      out[#out + 1] = i
      out[#out + 1] = nv
    end
  end
  if ok then
    a[j + 1] = k
    a[j + 2] = v
    j = j + 2
  end
end
if j > 0 then call('MSET', unpack(a)) end
return out
