"""Python client for state-service (``stateservice.v1``).

>>> from state_service_client import StateClient
>>> client = StateClient("127.0.0.1:50051", tenant="team-a")
>>> client.put("user:42", {"name": "Ada", "visits": 1})
>>> client.update("user:42", lambda u: {**u, "visits": u["visits"] + 1})

:class:`StateClient` (blocking, grpcio) and :class:`AsyncStateClient`
(asyncio, grpc.aio) share one surface; values are native Python values
(see :mod:`state_service_client.values`), errors are typed
(:mod:`state_service_client.errors`).
"""

from ._base import (
    Counter,
    Entry,
    Op,
    PutItem,
    RetryPolicy,
    channel_options,
    service_config,
)
from .aio import AsyncStateClient
from .client import StateClient
from .errors import (
    Aborted,
    AlreadyExists,
    Cancelled,
    ConditionFailed,
    CrossSlot,
    DeadlineExceeded,
    IncrementOverflow,
    InternalError,
    InvalidArgument,
    InvalidStoredValue,
    LimitExceeded,
    NotAnInteger,
    NotFound,
    PermissionDenied,
    RequestIdReused,
    ResourceExhausted,
    StateError,
    Unauthenticated,
    Unavailable,
    ValueConversionError,
    VersionMismatch,
)
from .values import from_value, same, to_value

__version__ = "0.1.0"

__all__ = [
    "AsyncStateClient",
    "StateClient",
    "Counter",
    "Entry",
    "Op",
    "PutItem",
    "RetryPolicy",
    "channel_options",
    "service_config",
    "from_value",
    "to_value",
    "same",
    "Aborted",
    "AlreadyExists",
    "Cancelled",
    "ConditionFailed",
    "CrossSlot",
    "DeadlineExceeded",
    "IncrementOverflow",
    "InternalError",
    "InvalidArgument",
    "InvalidStoredValue",
    "LimitExceeded",
    "NotAnInteger",
    "NotFound",
    "PermissionDenied",
    "RequestIdReused",
    "ResourceExhausted",
    "StateError",
    "Unauthenticated",
    "Unavailable",
    "ValueConversionError",
    "VersionMismatch",
]
