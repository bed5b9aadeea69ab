-- Floor of any Lua BatchPut: KEYS/ARGV into Lua and one MSET, no reads, no
-- checks (NOT a versioned write). Same arguments as batch_exc.
local a = {}
for i = 1, #KEYS do
  a[2 * i - 1] = KEYS[i]
  a[2 * i] = ARGV[i + 1]
end
redis.call('MSET', unpack(a))
return {}
