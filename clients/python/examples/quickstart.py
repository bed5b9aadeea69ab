"""Quick start: python examples/quickstart.py [host:port]"""
import sys

from state_service_client import StateClient, VersionMismatch

client = StateClient(sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:50051", tenant="quickstart")
version = client.put("user:42", {"name": "Ada", "visits": 1, "tags": ["admin"], "avatar": b"\x89PNG"})
print(client.get("user:42"))                               # Entry(key=..., value={...}, version=..., ttl=None)
client.update("user:42", lambda u: {**u, "visits": u["visits"] + 1})   # read, modify, compare-and-set, retry
print(client.increment("hits", 5).value)                   # exact int64 counter
client.put_with_ttl("session:9", {"step": 3}, ttl=30)      # expires in 30 s
print(sorted(client.list("user:")))                        # pages through List for you
try:
    client.put("user:42", "stale write", if_version=version)
except VersionMismatch as e:
    print("lost the race; the key is now at version", e.current_version)
