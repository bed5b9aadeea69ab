-- Stand-in for Dapr's Redis state store versioned write (`setQuery` in
-- components-contrib state/redis), used only when its exact text is not given
-- to the lab (DAPR_SET_LUA): the same Redis commands in the same order, with
-- the same arguments (ARGV[1] etag, ARGV[2] data, ARGV[3] first-write flag).
-- Written for the lab; the lab reports both when both are available.
local cur = redis.pcall('HGET', KEYS[1], 'version')
if type(cur) == 'table' then redis.call('DEL', KEYS[1]) end
local fw = redis.pcall('HGET', KEYS[1], 'first-write')
local free = not cur or type(cur) == 'table' or cur == ''
if free or cur == ARGV[1] or (not fw and ARGV[1] == '0') then
  redis.call('HSET', KEYS[1], 'data', ARGV[2])
  if ARGV[3] == '0' then redis.call('HSET', KEYS[1], 'first-write', 0) end
  return redis.call('HINCRBY', KEYS[1], 'version', 1)
end
return redis.error_reply('failed to set key ' .. KEYS[1])
