"""Typed errors built from the gRPC status and its ``google.rpc.ErrorInfo``
detail (domain ``stateservice.v1``).

Catch by what happened::

    try:
        client.put("k", v, if_version=7)
    except VersionMismatch as e:
        print("someone else wrote version", e.current_version)

The hierarchy follows the status codes: every ``FAILED_PRECONDITION`` reason
is a :class:`ConditionFailed`, ``VERSION_MISMATCH`` is an :class:`Aborted`,
``LIMIT_EXCEEDED`` is an :class:`InvalidArgument`. A status without ErrorInfo
(transport errors) still maps by its code. ``grpc-status-details-bin`` is
decoded by a few lines of protobuf wire parsing below, so no googleapis
package is needed.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, Optional, Tuple

import grpc

ERROR_DOMAIN = "stateservice.v1"
_ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"
_RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"
_DETAILS_KEY = "grpc-status-details-bin"

#: RESOURCE_EXHAUSTED reasons where waiting helps (a message over a size
#: limit does not shrink on retry).
RETRYABLE_EXHAUSTED_REASONS = frozenset(
    {"RATE_LIMITED", "OVERLOADED", "TENANT_OVERLOADED", "BACKEND_OUT_OF_MEMORY"}
)


class StateError(Exception):
    """Any error from the service, the transport or this client."""

    def __init__(
        self,
        message: str,
        *,
        code: Optional[grpc.StatusCode] = None,
        reason: Optional[str] = None,
        metadata: Optional[Dict[str, str]] = None,
        retry_after: Optional[float] = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        #: The gRPC status code (None for errors raised by the client itself).
        self.code = code
        #: ErrorInfo.reason, e.g. "VERSION_MISMATCH", when the server sent one.
        self.reason = reason
        #: ErrorInfo.metadata.
        self.metadata: Dict[str, str] = dict(metadata or {})
        #: Seconds the server asked to wait (google.rpc.RetryInfo).
        self.retry_after = retry_after

    @property
    def key(self) -> Optional[str]:
        return self.metadata.get("key")

    @property
    def current_version(self) -> Optional[int]:
        """The key's version when a condition failed (0: absent)."""
        return _int(self.metadata.get("current_version"))

    @property
    def op_index(self) -> Optional[int]:
        """The failing op of a transaction or batch."""
        return _int(self.metadata.get("op_index"))

    @property
    def transient(self) -> bool:
        """Whether repeating a request that is safe to repeat may succeed."""
        return False

    def __str__(self) -> str:
        code = self.code.name if self.code is not None else type(self).__name__
        return f"{code} {self.reason}: {self.message}" if self.reason else f"{code}: {self.message}"


class ValueConversionError(StateError, ValueError):
    """A native value with no exact Value representation (nothing was sent)."""


class InvalidArgument(StateError):
    """INVALID_ARGUMENT: fix the request."""


class LimitExceeded(InvalidArgument):
    """INVALID_ARGUMENT LIMIT_EXCEEDED: a configured server limit."""

    @property
    def setting(self) -> Optional[str]:
        """The server flag that sets the limit, e.g. ``--max-value-bytes``."""
        return self.metadata.get("setting")

    @property
    def limit(self) -> Optional[int]:
        return _int(self.metadata.get("limit"))


class ConditionFailed(StateError):
    """FAILED_PRECONDITION: retrying unchanged fails again."""


class AlreadyExists(ConditionFailed):
    """Create-only (``if_absent``) on an existing key."""


class NotFound(ConditionFailed):
    """``if_exists`` on an absent key."""


class NotAnInteger(ConditionFailed):
    """Increment of a value that is not an int."""

    @property
    def stored_type(self) -> Optional[str]:
        return self.metadata.get("stored_type")


class IncrementOverflow(ConditionFailed):
    """The increment would leave the int64 range; nothing changed."""


class InvalidStoredValue(ConditionFailed):
    """The key holds data the service did not write."""


class CrossSlot(ConditionFailed):
    """A transaction's keys span Redis Cluster hash slots."""


class RequestIdReused(ConditionFailed):
    """A request id was reused for a different write."""


class Aborted(StateError):
    """ABORTED: a concurrency conflict; re-read and retry."""


class VersionMismatch(Aborted):
    """A compare-and-set lost a race (``current_version``: what the key holds now)."""


class Unauthenticated(StateError):
    """Missing, unknown or revoked credentials."""


class PermissionDenied(StateError):
    """The credentials lack a scope, or name another tenant."""


class ResourceExhausted(StateError):
    """Rate limited, overloaded, Redis out of memory, or a message too large."""

    @property
    def transient(self) -> bool:
        return self.retry_after is not None or self.reason in RETRYABLE_EXHAUSTED_REASONS


class Unavailable(StateError):
    """The service or its Redis cannot be reached; retry with backoff."""

    @property
    def transient(self) -> bool:
        return True


class DeadlineExceeded(StateError):
    """The deadline passed; for a write the outcome is unknown."""

    @property
    def transient(self) -> bool:
        return True


class Cancelled(StateError):
    """The call was cancelled."""


class InternalError(StateError):
    """INTERNAL, UNKNOWN or an undocumented code."""


_BY_REASON = {
    "VERSION_MISMATCH": VersionMismatch,
    "ALREADY_EXISTS": AlreadyExists,
    "NOT_FOUND": NotFound,
    "NOT_AN_INTEGER": NotAnInteger,
    "INCREMENT_OVERFLOW": IncrementOverflow,
    "INVALID_STORED_VALUE": InvalidStoredValue,
    "CROSS_SLOT": CrossSlot,
    "REQUEST_ID_REUSED": RequestIdReused,
    "LIMIT_EXCEEDED": LimitExceeded,
}

_BY_CODE = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.OUT_OF_RANGE: InvalidArgument,
    grpc.StatusCode.FAILED_PRECONDITION: ConditionFailed,
    grpc.StatusCode.ABORTED: Aborted,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.CANCELLED: Cancelled,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
}


def error_class(code: Optional[grpc.StatusCode], reason: Optional[str]) -> type:
    return _BY_REASON.get(reason or "") or _BY_CODE.get(code, InternalError)


def from_status(
    code: grpc.StatusCode,
    message: str,
    trailing_metadata: Optional[Iterable[Tuple[str, Any]]],
) -> StateError:
    """Builds the typed error for a failed call."""
    reason: Optional[str] = None
    meta: Dict[str, str] = {}
    retry_after: Optional[float] = None
    for k, v in trailing_metadata or ():
        if k == _DETAILS_KEY and isinstance(v, (bytes, bytearray)):
            try:
                reason, meta, retry_after = decode_status_details(bytes(v))
            except ValueError:
                # A corrupt detail must not hide the status itself.
                pass
    cls = error_class(code, reason)
    return cls(message, code=code, reason=reason, metadata=meta, retry_after=retry_after)


def from_rpc_error(err: grpc.RpcError) -> StateError:
    """The typed error for a ``grpc.RpcError`` (sync or aio)."""
    code = err.code()  # type: ignore[attr-defined]
    details = err.details() or ""  # type: ignore[attr-defined]
    try:
        trailers = err.trailing_metadata()  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - some transport failures carry none
        trailers = None
    return from_status(code, details, trailers)


def from_condition_failure(key: str, reason: str, current_version: int, message: str) -> StateError:
    """The typed error for one failed BatchPut item."""
    code = (
        grpc.StatusCode.ABORTED if reason == "VERSION_MISMATCH" else grpc.StatusCode.FAILED_PRECONDITION
    )
    cls = error_class(code, reason)
    return cls(
        message,
        code=code,
        reason=reason,
        metadata={"key": key, "current_version": str(current_version)},
    )


# --- google.rpc.Status wire decoding ---------------------------------------


def decode_status_details(
    data: bytes,
) -> Tuple[Optional[str], Dict[str, str], Optional[float]]:
    """Decodes ``grpc-status-details-bin`` (a google.rpc.Status) into
    (ErrorInfo.reason, ErrorInfo.metadata, RetryInfo delay in seconds).
    ErrorInfo of another domain is ignored. Raises ValueError when malformed.
    """
    reason: Optional[str] = None
    meta: Dict[str, str] = {}
    retry_after: Optional[float] = None
    for field, _, any_bytes in _fields(data):
        if field != 3 or not isinstance(any_bytes, bytes):  # Status.details (Any)
            continue
        type_url, payload = "", b""
        for f, _, v in _fields(any_bytes):
            if f == 1 and isinstance(v, bytes):
                type_url = v.decode("utf-8")
            elif f == 2 and isinstance(v, bytes):
                payload = v
        if type_url == _ERROR_INFO:
            r, domain, m = _error_info(payload)
            if domain in (ERROR_DOMAIN, ""):
                reason, meta = r, m
        elif type_url == _RETRY_INFO:
            for f, _, v in _fields(payload):
                if f == 1 and isinstance(v, bytes):  # retry_delay: Duration
                    secs = nanos = 0
                    for df, _, dv in _fields(v):
                        if df == 1 and isinstance(dv, int):
                            secs = _signed64(dv)
                        elif df == 2 and isinstance(dv, int):
                            nanos = _signed64(dv)
                    retry_after = max(0.0, secs + nanos / 1e9)
    return reason, meta, retry_after


def _error_info(payload: bytes) -> Tuple[str, str, Dict[str, str]]:
    reason, domain, meta = "", "", {}
    for f, _, v in _fields(payload):
        if not isinstance(v, bytes):
            continue
        if f == 1:
            reason = v.decode("utf-8")
        elif f == 2:
            domain = v.decode("utf-8")
        elif f == 3:  # map<string, string> entry
            k = val = ""
            for ef, _, ev in _fields(v):
                if ef == 1 and isinstance(ev, bytes):
                    k = ev.decode("utf-8")
                elif ef == 2 and isinstance(ev, bytes):
                    val = ev.decode("utf-8")
            meta[k] = val
    return reason, domain, meta


def _fields(buf: bytes):
    """Yields (field number, wire type, value) of a protobuf message: an int
    for varints and fixed fields, bytes for length-delimited ones."""
    i, n = 0, len(buf)
    while i < n:
        tag, i = _varint(buf, i)
        field, wire = tag >> 3, tag & 7
        if wire == 0:
            v, i = _varint(buf, i)
            yield field, wire, v
        elif wire == 2:
            length, i = _varint(buf, i)
            if i + length > n:
                raise ValueError("truncated length-delimited field")
            yield field, wire, buf[i : i + length]
            i += length
        elif wire == 1:
            if i + 8 > n:
                raise ValueError("truncated fixed64")
            yield field, wire, int.from_bytes(buf[i : i + 8], "little")
            i += 8
        elif wire == 5:
            if i + 4 > n:
                raise ValueError("truncated fixed32")
            yield field, wire, int.from_bytes(buf[i : i + 4], "little")
            i += 4
        else:
            raise ValueError(f"unsupported wire type {wire}")


def _varint(buf: bytes, i: int) -> Tuple[int, int]:
    result = shift = 0
    while True:
        if i >= len(buf) or shift > 63:
            raise ValueError("truncated varint")
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7


def _signed64(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _int(s: Optional[str]) -> Optional[int]:
    try:
        return int(s) if s is not None else None
    except ValueError:
        return None
