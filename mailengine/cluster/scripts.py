"""The Lua scripts Redis runs for shared caps, one round trip each (pure text).

Every script reads the time from Redis (``TIME``), so nodes with skewed clocks still
agree on lease expiry and on rate and hourly windows. Keys share the hash tag
``{mailengine}``. Times inside Redis are milliseconds.
"""

from __future__ import annotations

PREFIX = "{mailengine}:"
NODES = PREFIX + "nodes"  # sorted set: node -> last heartbeat (ms)
NODE_INFO = PREFIX + "node-info"  # hash: node -> JSON of what it said of itself
REACTIONS = PREFIX + "reactions"  # hash: domain -> JSON of its SharedReaction
HOURLY = PREFIX + "hourly:"  # + minute number: messages taken in that minute
CONTENDED = PREFIX + "contended"  # sorted set: lease set -> until when a lease was refused
LEASES = PREFIX + "leases:"


def lease_key(cap_key: str) -> str:
    """Sorted set of lease ids under one cap, scored by their expiry (ms)."""
    return LEASES + cap_key


def rate_key(domain: str) -> str:
    """GCRA theoretical arrival time (ms) of ``domain``'s message rate."""
    return PREFIX + "rate:" + domain


_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS: one lease set per cap, then CONTENDED, then NODES. ARGV: lease id (node|...), ttl
# ms, contended ms, node ttl ms, then each cap's limit. 1: granted (held under every cap);
# 0: one of the caps is full. It is then marked as contended (nodes holding more than
# their share of it give some back) when the asking node holds less than its fair part
# of it (the limit divided by the nodes alive, rounded up), as cluster/store.py does.
ACQUIRE = (
    _NOW
    + """
local ttl, caps = tonumber(ARGV[2]), #KEYS - 2
local prefix = (string.match(ARGV[1], '^([^|]*)|') or ARGV[1]) .. '|'
for i = 1, caps do
  local key = KEYS[i]
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  if not redis.call('ZSCORE', key, ARGV[1]) then
    local limit = tonumber(ARGV[i + 4])
    if redis.call('ZCARD', key) >= limit then
      local nodes = redis.call('ZCOUNT', KEYS[#KEYS], now - tonumber(ARGV[4]), '+inf')
      local mine = 0
      for _, id in ipairs(redis.call('ZRANGE', key, 0, -1)) do
        if string.sub(id, 1, #prefix) == prefix then mine = mine + 1 end
      end
      if mine < math.ceil(limit / math.max(1, nodes)) then
        redis.call('ZADD', KEYS[#KEYS - 1], now + tonumber(ARGV[3]), key)
      end
      return 0
    end
  end
end
for i = 1, caps do
  redis.call('ZADD', KEYS[i], now + ttl, ARGV[1])
  redis.call('PEXPIRE', KEYS[i], ttl * 2)
end
return 1
"""
)

# KEYS: the lease's sets. ARGV: lease id.
RELEASE = """
for _, key in ipairs(KEYS) do
  redis.call('ZREM', key, ARGV[1])
end
return 1
"""

# KEYS: NODES, NODE_INFO, REACTIONS, CONTENDED, then one lease set per lease held.
# ARGV: node, its info JSON, node ttl ms, lease ttl ms, then one lease id per lease set.
# Renews (or, after a Redis restart, restores) every lease of the node, drops nodes
# not heard from and reactions that no longer matter.
# Returns {now, nodes, reactions, contended lease sets}.
HEARTBEAT = (
    _NOW
    + """
local node_ttl, lease_ttl = tonumber(ARGV[3]), tonumber(ARGV[4])
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
for _, gone in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - node_ttl)) do
  redis.call('HDEL', KEYS[2], gone)
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - node_ttl)
for i = 5, #KEYS do
  redis.call('ZADD', KEYS[i], now + lease_ttl, ARGV[i])
  redis.call('PEXPIRE', KEYS[i], lease_ttl * 2)
end
local nodes = {}
local seen = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
for i = 1, #seen, 2 do
  nodes[#nodes + 1] = seen[i]
  nodes[#nodes + 1] = seen[i + 1]
  nodes[#nodes + 1] = redis.call('HGET', KEYS[2], seen[i]) or '{}'
end
local reactions = {}
local all = redis.call('HGETALL', KEYS[3])
for i = 1, #all, 2 do
  local ok, r = pcall(cjson.decode, all[i + 1])
  if ok and type(r) == 'table' and tonumber(r.expires or 0) * 1000 + node_ttl < now then
    redis.call('HDEL', KEYS[3], all[i])
  else
    reactions[#reactions + 1] = all[i + 1]
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
return {now, nodes, reactions, redis.call('ZRANGE', KEYS[4], 0, -1)}
"""
)

# KEYS: NODES, NODE_INFO. ARGV: node. A stopping node leaves the list at once.
LEAVE = """
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return 1
"""

# KEYS: the rate's key. ARGV: emission interval ms, burst tolerance ms, tokens wanted.
# GCRA (a virtual scheduling token bucket): returns {granted, ms until one conforms}.
RATE = (
    _NOW
    + """
local interval, tau, want = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local n = math.floor((now + tau - tat) / interval) + 1
if n > want then n = want end
if n < 1 then
  return {0, math.ceil(tat - tau - now)}
end
tat = tat + n * interval
redis.call('SET', KEYS[1], string.format('%.3f', tat), 'PX', math.ceil(tat - now) + 1000)
return {n, 0}
"""
)

# ARGV: bucket prefix, cap, wanted. Minute buckets: the last 60 together hold at most
# the cap. Returns {granted, minute taken from, ms until the oldest used bucket leaves}.
HOURLY_TAKE = (
    _NOW
    + """
local prefix, cap, want = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local minute = math.floor(now / 60000)
local keys = {}
for i = 0, 59 do keys[i + 1] = prefix .. (minute - i) end
local values = redis.call('MGET', unpack(keys))
local used = 0
for i = 1, 60 do used = used + tonumber(values[i] or 0) end
local n = math.min(want, cap - used)
if n > 0 then
  redis.call('INCRBY', keys[1], n)
  redis.call('EXPIRE', keys[1], 3720)
  return {n, minute, 0}
end
for i = 60, 1, -1 do
  if tonumber(values[i] or 0) > 0 then
    return {0, minute, (minute - (i - 1) + 60) * 60000 - now}
  end
end
return {0, minute, 1000}
"""
)

# ARGV: bucket prefix, minute, count: room taken and not used goes back.
HOURLY_GIVE_BACK = """
local key = ARGV[1] .. ARGV[2]
local held = tonumber(redis.call('GET', key) or 0)
local back = math.min(held, tonumber(ARGV[3]))
if back > 0 then redis.call('DECRBY', key, back) end
return back
"""
