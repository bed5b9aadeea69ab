-- GET + SET and nothing else: the two commands a versioned write needs.
local v = redis.call('GET', KEYS[1])
redis.call('SET', KEYS[1], ARGV[1])
return 1
