-- Lean conditional delete. KEYS[1] key; ARGV[1] condition 'E' or 'V'
-- (version = ARGV[2]). Returns 1 (deleted) or {'F', reason, current}.
local k = KEYS[1]
local h = redis.call('GETRANGE', k, 0, 31)
if h == '' then return {'F', 'NOT_FOUND', ''} end
if #h < 32 or not string.find(h, '^\255\2%d+$') then
  return {'F', 'INVALID_STORED_VALUE', '', 'the value has no state-service header'}
end
if ARGV[1] == 'V' and string.sub(h, 3, 18) ~= ARGV[2] then
  return {'F', 'VERSION_MISMATCH', string.sub(h, 3, 18)}
end
return redis.call('DEL', k)
