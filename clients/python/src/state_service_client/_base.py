"""What the sync and asyncio clients share: connection settings, the retry
policy, request builders (each returns the message and whether repeating it
is safe) and response parsers. No I/O happens here."""

from __future__ import annotations

import datetime
import json
import random
import uuid
from dataclasses import dataclass
from importlib import resources
from typing import Any, Iterable, List, NamedTuple, Optional, Sequence, Tuple, Union

import grpc

from . import _proto as pb
from . import errors
from .values import Native, from_value, to_value

#: Seconds, or a timedelta.
Duration = Union[float, int, datetime.timedelta]

DEFAULT_TIMEOUT = 10.0
#: The server decodes requests up to max(max-value-bytes + max-key-bytes +
#: overhead, 4 MiB); with default limits that is 4 MiB.
DEFAULT_MAX_SEND_MESSAGE_BYTES = 4 * 1024 * 1024
#: The server does not cap responses, so neither does the client (-1).
DEFAULT_MAX_RECEIVE_MESSAGE_BYTES = -1

SERVICE_CONFIG: dict = json.loads(
    resources.files(__package__).joinpath("service_config.json").read_text("utf-8")
)


def service_config(include_writes: bool = True) -> dict:
    """The gRPC service config (retry policy). Without ``include_writes`` only
    the always-safe methods (reads, Expire, Persist) are retried: use that
    for a plain stub that does not set request ids."""
    cfg = json.loads(json.dumps(SERVICE_CONFIG))
    if not include_writes:
        cfg["methodConfig"] = cfg["methodConfig"][:1]
    return cfg


def channel_options(
    *,
    include_writes: bool = True,
    max_send_message_bytes: int = DEFAULT_MAX_SEND_MESSAGE_BYTES,
    max_receive_message_bytes: int = DEFAULT_MAX_RECEIVE_MESSAGE_BYTES,
) -> List[Tuple[str, Any]]:
    """Channel arguments matching the server: its keepalive (ping every 30 s,
    10 s to answer), its message sizes, the retry policy, and reconnect
    backoff capped at 2 s (grpc's default grows to 120 s, which would keep a
    client away long after a restarted server is back)."""
    return [
        ("grpc.service_config", json.dumps(service_config(include_writes))),
        ("grpc.enable_retries", 1),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.max_send_message_length", max_send_message_bytes),
        ("grpc.max_receive_message_length", max_receive_message_bytes),
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 2_000),
    ]


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of calls that are safe to repeat (reads; writes with a request
    id or a condition; Expire/Persist) on UNAVAILABLE, DEADLINE_EXCEEDED and
    retryable RESOURCE_EXHAUSTED, and the bound of ``update``'s CAS loop."""

    #: Stop retrying after this many seconds since the first attempt.
    max_elapsed: float = 30.0
    initial_backoff: float = 0.05
    max_backoff: float = 2.0
    multiplier: float = 2.0
    #: Compare-and-set attempts of ``update`` before it raises the last VersionMismatch.
    update_attempts: int = 16

    def backoff(self, attempt: int) -> float:
        """Delay before retry ``attempt`` (0-based), uniformly in [b/2, b]."""
        base = min(self.initial_backoff * max(self.multiplier, 1.0) ** min(attempt, 64), self.max_backoff)
        return base * (0.5 + random.random() * 0.5)

    @classmethod
    def none(cls) -> "RetryPolicy":
        return cls(max_elapsed=0.0, update_attempts=1)


@dataclass(frozen=True)
class Entry:
    """A stored key as read back."""

    key: str
    value: Native
    #: Changes on every write; pass it as ``if_version``.
    version: int
    #: Remaining time to live in seconds; None: no expiry.
    ttl: Optional[float]


class Counter(NamedTuple):
    """Value and version after an increment."""

    value: int
    version: int


@dataclass(frozen=True)
class PutItem:
    """One BatchPut item."""

    key: str
    value: Any
    ttl: Optional[Duration] = None
    if_absent: bool = False
    if_exists: bool = False
    if_version: Optional[int] = None
    keep_ttl: bool = False
    request_id: Optional[str] = None


@dataclass(frozen=True)
class Op:
    """One transaction op; build with ``Op.put`` / ``Op.put_with_ttl`` /
    ``Op.delete`` / ``Op.increment``."""

    kind: str
    key: str
    value: Any = None
    ttl: Optional[Duration] = None
    delta: int = 0
    if_absent: bool = False
    if_exists: bool = False
    if_version: Optional[int] = None
    keep_ttl: bool = False

    @classmethod
    def put(cls, key: str, value: Any, *, if_absent=False, if_exists=False, if_version=None, keep_ttl=False) -> "Op":
        return cls("put", key, value, if_absent=if_absent, if_exists=if_exists, if_version=if_version, keep_ttl=keep_ttl)

    @classmethod
    def put_with_ttl(cls, key: str, value: Any, ttl: Duration, *, if_absent=False, if_exists=False, if_version=None) -> "Op":
        return cls("put_with_ttl", key, value, ttl=ttl, if_absent=if_absent, if_exists=if_exists, if_version=if_version)

    @classmethod
    def delete(cls, key: str, *, if_exists=False, if_version=None) -> "Op":
        return cls("delete", key, if_exists=if_exists, if_version=if_version)

    @classmethod
    def increment(cls, key: str, delta: int = 1, *, ttl: Optional[Duration] = None) -> "Op":
        return cls("increment", key, delta=delta, ttl=ttl)


def _seconds(d: Duration) -> float:
    return d.total_seconds() if isinstance(d, datetime.timedelta) else float(d)


def _duration(msg: Any, d: Duration) -> None:
    """Fills a google.protobuf.Duration with millisecond precision (the
    service truncates below 1 ms anyway)."""
    ms = round(_seconds(d) * 1000)
    if ms < 0:
        raise errors.InvalidArgument(f"a duration must not be negative, got {d!r}")
    msg.seconds, msg.nanos = divmod(ms, 1000)
    msg.nanos *= 1_000_000


def _condition(msg: Any, if_absent: bool, if_exists: bool, if_version: Optional[int]) -> bool:
    """Sets the request's condition; returns whether there is one."""
    given = [c for c in (if_absent, if_exists, if_version is not None) if c]
    if len(given) > 1:
        raise errors.InvalidArgument("give at most one of if_absent, if_exists, if_version")
    if if_absent:
        msg.condition.if_absent.SetInParent()
    elif if_exists:
        msg.condition.if_exists.SetInParent()
    elif if_version is not None:
        msg.condition.if_version = if_version
    return bool(given)


class Core:
    """Settings and message building shared by StateClient and AsyncStateClient."""

    def __init__(
        self,
        address: str,
        *,
        tenant: Optional[str] = None,
        token: Optional[str] = None,
        tls: Optional[bool] = None,
        root_certificates: Optional[bytes] = None,
        private_key: Optional[bytes] = None,
        certificate_chain: Optional[bytes] = None,
        server_name: Optional[str] = None,
        timeout: float = DEFAULT_TIMEOUT,
        retry: Optional[RetryPolicy] = None,
        request_ids: bool = True,
        max_send_message_bytes: int = DEFAULT_MAX_SEND_MESSAGE_BYTES,
        max_receive_message_bytes: int = DEFAULT_MAX_RECEIVE_MESSAGE_BYTES,
        options: Sequence[Tuple[str, Any]] = (),
    ) -> None:
        target = address
        for scheme in ("http://", "https://"):
            if target.startswith(scheme):
                target = target[len(scheme):]
                if tls is None:
                    tls = scheme == "https://"
        if tls is None:
            tls = any(x is not None for x in (root_certificates, private_key, certificate_chain))
        self.target = target
        self.credentials = (
            grpc.ssl_channel_credentials(
                root_certificates=root_certificates,
                private_key=private_key,
                certificate_chain=certificate_chain,
            )
            if tls
            else None
        )
        meta = []
        if token is not None:
            meta.append(("authorization", f"Bearer {token}"))
        if tenant is not None:
            meta.append(("x-tenant-id", tenant))
        self.metadata = tuple(meta)
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.request_ids = request_ids
        opts = channel_options(
            include_writes=request_ids,
            max_send_message_bytes=max_send_message_bytes,
            max_receive_message_bytes=max_receive_message_bytes,
        )
        if server_name:
            opts.append(("grpc.ssl_target_name_override", server_name))
        self.options = opts + list(options)

    def stubs(self, channel: Any) -> dict:
        return {
            name: channel.unary_unary(
                f"/{pb.SERVICE}/{name}",
                request_serializer=req.SerializeToString,
                response_deserializer=resp.FromString,
            )
            for name, (req, resp) in pb.METHODS.items()
        }

    def request_id(self, given: Optional[str]) -> str:
        if given is not None:
            return given
        return str(uuid.uuid4()) if self.request_ids else ""

    # --- builders: (request, safe to repeat) ---------------------------------

    def get(self, key: str):
        return pb.GetRequest(key=key), True

    def put(self, key, value, if_absent, if_exists, if_version, keep_ttl, request_id):
        req = pb.PutRequest(key=key, value=to_value(value), keep_ttl=keep_ttl, request_id=self.request_id(request_id))
        cond = _condition(req, if_absent, if_exists, if_version)
        return req, cond or bool(req.request_id)

    def put_with_ttl(self, key, value, ttl, if_absent, if_exists, if_version, request_id):
        req = pb.PutWithTtlRequest(key=key, value=to_value(value), request_id=self.request_id(request_id))
        _duration(req.ttl, ttl)
        cond = _condition(req, if_absent, if_exists, if_version)
        return req, cond or bool(req.request_id)

    def delete(self, key, if_exists, if_version, request_id):
        req = pb.DeleteRequest(key=key, request_id=self.request_id(request_id))
        cond = _condition(req, False, if_exists, if_version)
        return req, cond or bool(req.request_id)

    def increment(self, key, delta, ttl, request_id):
        req = pb.IncrementRequest(key=key, delta=delta, request_id=self.request_id(request_id))
        if ttl is not None:
            _duration(req.ttl, ttl)
        return req, bool(req.request_id)

    def expire(self, key, ttl):
        req = pb.ExpireRequest(key=key)
        _duration(req.ttl, ttl)
        return req, True

    def persist(self, key):
        return pb.PersistRequest(key=key), True

    def batch_get(self, keys: Iterable[str]):
        return pb.BatchGetRequest(keys=list(keys)), True

    def batch_put(self, items: Iterable[Union[PutItem, Tuple[str, Any]]]):
        req = pb.BatchPutRequest()
        safe = True
        keys = []
        for it in items:
            if not isinstance(it, PutItem):
                it = PutItem(*it)
            m = req.items.add(key=it.key, value=to_value(it.value), keep_ttl=it.keep_ttl, request_id=self.request_id(it.request_id))
            if it.ttl is not None:
                _duration(m.ttl, it.ttl)
            cond = _condition(m, it.if_absent, it.if_exists, it.if_version)
            safe = safe and (cond or bool(m.request_id))
            keys.append(it.key)
        return (req, keys), safe

    def batch_delete(self, keys: Iterable[str]):
        # Never repeated: a retry would report keys the first attempt
        # deleted as absent.
        return pb.BatchDeleteRequest(keys=list(keys)), False

    def list(self, prefix: str, page_size: int, token: str, include_values: bool):
        return pb.ListRequest(prefix=prefix, page_size=page_size, page_token=token, include_values=include_values), True

    def transact(self, ops: Sequence[Op], request_id: Optional[str]):
        req = pb.TransactRequest(request_id=self.request_id(request_id))
        for op in ops:
            o = req.ops.add()
            if op.kind == "put":
                m = o.put
                m.SetInParent()
                m.key, m.keep_ttl = op.key, op.keep_ttl
                m.value.CopyFrom(to_value(op.value))
                _condition(m, op.if_absent, op.if_exists, op.if_version)
            elif op.kind == "put_with_ttl":
                m = o.put_with_ttl
                m.SetInParent()
                m.key = op.key
                m.value.CopyFrom(to_value(op.value))
                _duration(m.ttl, op.ttl)
                _condition(m, op.if_absent, op.if_exists, op.if_version)
            elif op.kind == "delete":
                m = o.delete
                m.SetInParent()
                m.key = op.key
                _condition(m, False, op.if_exists, op.if_version)
            elif op.kind == "increment":
                m = o.increment
                m.SetInParent()
                m.key, m.delta = op.key, op.delta
                if op.ttl is not None:
                    _duration(m.ttl, op.ttl)
            else:
                raise errors.InvalidArgument(f"unknown op kind {op.kind!r}")
        return req, bool(req.request_id)

    # --- parsers -------------------------------------------------------------

    @staticmethod
    def entry(e: Any) -> Entry:
        ttl = e.ttl.seconds + e.ttl.nanos / 1e9 if e.HasField("ttl") else None
        return Entry(key=e.key, value=from_value(e.value), version=e.version, ttl=ttl)

    @classmethod
    def get_result(cls, resp: Any) -> Optional[Entry]:
        return cls.entry(resp.entry) if resp.found else None

    @staticmethod
    def batch_put_results(resp: Any, keys: List[str]) -> List[Union[int, errors.StateError]]:
        out: List[Union[int, errors.StateError]] = []
        for r, key in zip(resp.results, keys):
            if r.WhichOneof("outcome") == "version":
                out.append(r.version)
            else:
                f = r.failure
                out.append(errors.from_condition_failure(key, f.reason, f.current_version, f.message))
        return out

    @staticmethod
    def transact_results(resp: Any) -> List[Union[int, bool, Counter]]:
        out: List[Union[int, bool, Counter]] = []
        for r in resp.results:
            which = r.WhichOneof("result")
            if which == "put":
                out.append(r.put.version)
            elif which == "delete":
                out.append(r.delete.deleted)
            elif which == "increment":
                out.append(Counter(r.increment.value, r.increment.version))
            else:
                raise errors.InternalError("Transact result without an outcome")
        return out

    def update_write(self, key: str, current: Optional[Entry], new_value: Any):
        """The conditional Put of one ``update`` attempt (keeps the expiry)."""
        if current is None:
            return self.put(key, new_value, True, False, None, True, None)
        return self.put(key, new_value, False, False, current.version, True, None)
