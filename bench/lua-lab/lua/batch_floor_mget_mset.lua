-- batch_floor_mset plus one MGET of the old values (no checks): the floor of
-- a Lua BatchPut that reads before it writes.
local olds = redis.call('MGET', unpack(KEYS))
local a = {}
for i = 1, #KEYS do
  a[2 * i - 1] = KEYS[i]
  a[2 * i] = ARGV[i + 1]
end
redis.call('MSET', unpack(a))
return {}
