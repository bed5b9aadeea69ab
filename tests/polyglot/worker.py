"""Python side of the cross-language client tests (see README.md)."""

import asyncio
import json
import sys
import time

import state_service_client as s

MATRIX = {
    "null": None,
    "true": True,
    "false": False,
    "int_min": -(2**63),
    "int_max": 2**63 - 1,
    "int_zero": 0,
    "int_neg": -1,
    "double": 1.5,
    "double_integral": 3.0,
    "nan": float("nan"),
    "pos_inf": float("inf"),
    "neg_inf": float("-inf"),
    "neg_zero": -0.0,
    "subnormal": 5e-324,
    "double_max": 1.7976931348623157e308,
    "str_empty": "",
    "str_unicode": "ünïcødé 🦀 \x00 \U0010ffff",
    "bytes_empty": b"",
    "bytes_all": bytes(range(256)),
    "list_empty": [],
    "map_empty": {},
    "nested": {
        "a": [1, 2.5, None, "x", b"\x00\xff", {"b": [True, [], {}]}],
        "": -(2**63),
        "__proto__": {"k": 2**63 - 1},
    },
}


def client(cfg, cls=s.StateClient):
    return cls(cfg["addr"], tenant=cfg["tenant"])


class Timer:
    """Longest single client call, retries included: how long a worker stalls."""

    def __init__(self):
        self.max = 0.0

    def __call__(self, t0):
        self.max = max(self.max, time.monotonic() - t0)


def wordcount(cfg):
    words = open(cfg["shard"], encoding="utf-8").read().split()
    c, timer, worker, prefix = client(cfg), Timer(), cfg["worker"], cfg["prefix"]
    batch = cfg["batch"]
    start = time.monotonic()
    for lo in range(0, len(words), batch):
        hi = min(lo + batch, len(words))
        for w in words[lo:hi]:
            t0 = time.monotonic()
            c.increment(f"{prefix}count:{w}", 1)
            timer(t0)
        t0 = time.monotonic()
        c.update(f"{prefix}ckpt:{worker}", lambda _cp: {"offset": hi, "lang": "python"})
        timer(t0)
        t0 = time.monotonic()
        c.put_with_ttl(f"{prefix}session:{worker}", {"worker": worker, "offset": hi}, ttl=cfg["session_ttl_s"])
        timer(t0)
    return {"words": len(words), "seconds": time.monotonic() - start, "max_call_seconds": timer.max}


async def wordcount_async(cfg):
    words = open(cfg["shard"], encoding="utf-8").read().split()
    timer, worker, prefix = Timer(), cfg["worker"], cfg["prefix"]
    batch = cfg["batch"]
    async with client(cfg, s.AsyncStateClient) as c:
        start = time.monotonic()
        for lo in range(0, len(words), batch):
            hi = min(lo + batch, len(words))
            for w in words[lo:hi]:
                t0 = time.monotonic()
                await c.increment(f"{prefix}count:{w}", 1)
                timer(t0)
            t0 = time.monotonic()
            await c.update(f"{prefix}ckpt:{worker}", lambda _cp: {"offset": hi, "lang": "python-async"})
            timer(t0)
            t0 = time.monotonic()
            await c.put_with_ttl(f"{prefix}session:{worker}", {"worker": worker, "offset": hi}, ttl=cfg["session_ttl_s"])
            timer(t0)
        return {"words": len(words), "seconds": time.monotonic() - start, "max_call_seconds": timer.max}


def matrix_write(cfg):
    c = client(cfg)
    for name, v in MATRIX.items():
        c.put(f"matrix/python/{name}", v)
    return {"written": len(MATRIX)}


def matrix_check(cfg):
    c = client(cfg)
    bad = []
    for lang in cfg["others"]:
        for name, want in MATRIX.items():
            e = c.get(f"matrix/{lang}/{name}")
            got = e.value if e is not None else "<absent>"
            if e is None or not s.same(got, want):
                bad.append(f"{lang}/{name}: got {got!r}, want {want!r}")
    return {"checked": len(MATRIX) * len(cfg["others"]), "mismatches": bad}


def expect(bad, what, fn, cls, **attrs):
    try:
        fn()
    except cls as e:
        for k, v in attrs.items():
            if getattr(e, k) != v:
                bad.append(f"{what}: {k} = {getattr(e, k)!r}, want {v!r} ({e})")
        return
    except s.StateError as e:
        bad.append(f"{what}: raised {type(e).__name__} ({e}), want {cls.__name__}")
        return
    bad.append(f"{what}: no error, want {cls.__name__}")


def errors_conditions(cfg):
    c, k, bad = client(cfg), f"{cfg['prefix']}python", []
    v = c.put(k, "text")
    expect(bad, "lost CAS", lambda: c.put(k, "x", if_version=v + 1), s.VersionMismatch,
           current_version=v, reason="VERSION_MISMATCH", key=k)
    expect(bad, "create-only on an existing key", lambda: c.put(k, 1, if_absent=True), s.AlreadyExists,
           current_version=v, reason="ALREADY_EXISTS")
    expect(bad, "increment of a non-integer", lambda: c.increment(k, 1), s.NotAnInteger,
           stored_type="string", reason="NOT_AN_INTEGER")
    bad += asyncio.run(errors_conditions_async(cfg))
    return {"mismatches": bad}


async def errors_conditions_async(cfg):
    """The same through AsyncStateClient (grpc.aio carries trailers differently)."""
    k, bad = f"{cfg['prefix']}python-async", []
    async with client(cfg, s.AsyncStateClient) as c:
        v = await c.put(k, "text")
        for what, call, cls, attrs in [
            ("async lost CAS", c.put(k, "x", if_version=v + 1), s.VersionMismatch, {"current_version": v}),
            ("async create-only", c.put(k, 1, if_absent=True), s.AlreadyExists, {"current_version": v}),
            ("async non-integer", c.increment(k, 1), s.NotAnInteger, {"stored_type": "string"}),
        ]:
            try:
                await call
                bad.append(f"{what}: no error, want {cls.__name__}")
            except cls as e:
                bad += [f"{what}: {a} = {getattr(e, a)!r}" for a, want in attrs.items() if getattr(e, a) != want]
            except s.StateError as e:
                bad.append(f"{what}: raised {type(e).__name__} ({e}), want {cls.__name__}")
    return bad


def errors_limit(cfg):
    c, bad = client(cfg), []
    expect(bad, "oversized value", lambda: c.put(f"{cfg['prefix']}python-big", b"x" * (cfg["max_value_bytes"] + 1)),
           s.LimitExceeded, setting="--max-value-bytes", limit=cfg["max_value_bytes"])
    return {"mismatches": bad}


def tls(cfg):
    """Token and client certificate over TLS; typed auth errors."""
    ca = open(cfg["ca"], "rb").read()
    cert, key = open(cfg["cert"], "rb").read(), open(cfg["key"], "rb").read()
    bad = []
    by_token = s.StateClient(cfg["addr"], root_certificates=ca, token=cfg["token"])
    by_token.put("tls:python", 1)
    if by_token.get("tls:python").value != 1:
        bad.append("token: read back a different value")
    by_cert = s.StateClient(cfg["addr"], root_certificates=ca, private_key=key, certificate_chain=cert)
    by_cert.put("tls:python", 2)
    if by_cert.get("tls:python").value != 2 or by_token.get("tls:python").value != 1:
        bad.append("certificate: not its own tenant")
    anonymous = s.StateClient(cfg["addr"], root_certificates=ca)
    expect(bad, "no credentials", lambda: anonymous.get("tls:python"), s.Unauthenticated)
    wrong = s.StateClient(cfg["addr"], root_certificates=ca, token=cfg["token"], tenant="someone-else")
    expect(bad, "another tenant's header", lambda: wrong.get("tls:python"), s.PermissionDenied)
    return {"mismatches": bad}


def main():
    cfg = json.loads(sys.argv[1])
    role = cfg["role"]
    if role == "wordcount":
        out = asyncio.run(wordcount_async(cfg)) if cfg.get("async") else wordcount(cfg)
    else:
        out = {
            "matrix-write": matrix_write,
            "matrix-check": matrix_check,
            "errors-conditions": errors_conditions,
            "errors-limit": errors_limit,
            "tls": tls,
        }[role](cfg)
    out.update(lang="python", role=role, worker=cfg.get("worker"))
    print(json.dumps(out))
    sys.exit(1 if out.get("mismatches") else 0)


if __name__ == "__main__":
    main()
