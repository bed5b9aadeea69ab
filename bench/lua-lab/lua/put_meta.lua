-- put_pre + recent request ids (issue 13) kept inside the record.
-- Lab format: a record without ids is format 2 unchanged ('\255\2', 32-byte
-- header); a record with ids is '\255\3' .. version(16) .. expiry(14) ..
-- meta length(4 digits) .. meta .. payload, meta = ('\n' .. id .. ' ' ..
-- version(16)) repeated, newest first, cut after the entry that crosses
-- META_MAX bytes.
-- KEYS[1] key; ARGV[1] the record as the service builds it for an old record
-- without ids (format 2 without a request id; format 3 with the one entry
-- when it carries one); ARGV[2] now µs; ARGV[3] request id or ''; ARGV[4]
-- expiry for PXAT or ''.
-- Returns the version, or {'DUP', version} for a retry of a recorded id.
local META_MAX = 512
local k = KEYS[1]
local v = ARGV[1]
local now = tonumber(ARGV[2])
local rid = ARGV[3]
local h = redis.call('GETRANGE', k, 0, 35)
if h ~= '' then
  local a, b = string.byte(h, 1, 2)
  if b == 2 then
    if #h < 32 or not string.find(h, '^\255\2%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d') then
      return {'F', 'INVALID_STORED_VALUE', '', 'the value has no state-service header'}
    end
    local prev = tonumber(string.sub(h, 3, 18))
    if prev >= now then
      now = prev + 1
      v = string.sub(v, 1, 2) .. string.format('%016.0f', now) .. string.sub(v, 19)
    end
  else
    if a ~= 255 or b ~= 3 or #h < 36 or not string.find(h, '^\255\3%d+$') then
      return {'F', 'INVALID_STORED_VALUE', '', 'the value has no state-service header'}
    end
    local meta = redis.call('GETRANGE', k, 36, 35 + tonumber(string.sub(h, 33, 36)))
    if rid ~= '' then
      local p = string.find(meta, '\n' .. rid .. ' ', 1, true)
      if p then return {'DUP', tonumber(string.sub(meta, p + #rid + 2, p + #rid + 17))} end
    end
    local prev = tonumber(string.sub(h, 3, 18))
    if prev >= now then now = prev + 1 end
    -- the payload in ARGV[1] starts after its own header (and entry)
    local body
    if string.byte(v, 2) == 3 then body = 37 + tonumber(string.sub(v, 33, 36)) else body = 33 end
    if rid ~= '' then meta = '\n' .. rid .. ' ' .. string.format('%016.0f', now) .. meta end
    if #meta > META_MAX then
      local cut = string.find(meta, '\n', META_MAX, true)
      if cut then meta = string.sub(meta, 1, cut - 1) end
    end
    v = '\255\3' .. string.format('%016.0f', now) .. string.sub(v, 19, 32)
      .. string.format('%04d', #meta) .. meta .. string.sub(v, body)
  end
end
if ARGV[4] ~= '' then
  redis.call('SET', k, v, 'PXAT', ARGV[4])
else
  redis.call('SET', k, v)
end
return now
