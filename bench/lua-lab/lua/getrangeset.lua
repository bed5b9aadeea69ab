-- GETRANGE of the 32-byte header + SET and nothing else.
local h = redis.call('GETRANGE', KEYS[1], 0, 31)
redis.call('SET', KEYS[1], ARGV[1])
return 1
