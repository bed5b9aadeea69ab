import grpc
import pytest

from state_service_client import errors as e


# --- a minimal protobuf encoder, to build grpc-status-details-bin by hand ---
def varint(n):
    out = bytearray()
    n &= (1 << 64) - 1
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(num, payload):
    if isinstance(payload, int):
        return varint(num << 3) + varint(payload)
    if isinstance(payload, str):
        payload = payload.encode()
    return varint(num << 3 | 2) + varint(len(payload)) + payload


def error_info(reason, domain="stateservice.v1", **meta):
    body = field(1, reason) + field(2, domain)
    for k, v in meta.items():
        body += field(3, field(1, k) + field(2, v))
    return field(1, "type.googleapis.com/google.rpc.ErrorInfo") + field(2, body)


def retry_info(seconds, nanos):
    return field(1, "type.googleapis.com/google.rpc.RetryInfo") + field(
        2, field(1, field(1, seconds) + field(2, nanos))
    )


def status(code, message, *details):
    return field(1, code) + field(2, message) + b"".join(field(3, d) for d in details)


def typed(code, *details, message="msg"):
    trailers = [("grpc-status-details-bin", status(code.value[0], message, *details))]
    return e.from_status(code, message, trailers)


def test_version_mismatch_carries_the_current_version():
    err = typed(grpc.StatusCode.ABORTED, error_info("VERSION_MISMATCH", key="k", current_version="42"))
    assert isinstance(err, e.VersionMismatch) and isinstance(err, e.Aborted)
    assert err.current_version == 42 and err.key == "k"
    assert err.reason == "VERSION_MISMATCH" and err.code == grpc.StatusCode.ABORTED
    assert not err.transient


@pytest.mark.parametrize(
    "reason,cls",
    [
        ("ALREADY_EXISTS", e.AlreadyExists),
        ("NOT_FOUND", e.NotFound),
        ("NOT_AN_INTEGER", e.NotAnInteger),
        ("INCREMENT_OVERFLOW", e.IncrementOverflow),
        ("INVALID_STORED_VALUE", e.InvalidStoredValue),
        ("CROSS_SLOT", e.CrossSlot),
        ("REQUEST_ID_REUSED", e.RequestIdReused),
    ],
)
def test_failed_preconditions_map_by_reason(reason, cls):
    err = typed(grpc.StatusCode.FAILED_PRECONDITION, error_info(reason, key="k", op_index="2"))
    assert type(err) is cls and isinstance(err, e.ConditionFailed)
    assert err.op_index == 2


def test_not_an_integer_names_the_stored_type():
    err = typed(grpc.StatusCode.FAILED_PRECONDITION, error_info("NOT_AN_INTEGER", stored_type="string"))
    assert err.stored_type == "string"


def test_limit_exceeded_names_the_setting_and_is_an_invalid_argument():
    err = typed(
        grpc.StatusCode.INVALID_ARGUMENT,
        error_info("LIMIT_EXCEEDED", setting="--max-value-bytes", limit="1048576"),
    )
    assert isinstance(err, e.LimitExceeded) and isinstance(err, e.InvalidArgument)
    assert err.setting == "--max-value-bytes" and err.limit == 1048576


def test_retry_info_gives_the_delay_and_makes_exhaustion_transient():
    err = typed(grpc.StatusCode.RESOURCE_EXHAUSTED, retry_info(1, 500_000_000))
    assert isinstance(err, e.ResourceExhausted)
    assert err.retry_after == pytest.approx(1.5)
    assert err.transient


def test_exhaustion_without_a_retryable_reason_is_not_transient():
    assert not typed(grpc.StatusCode.RESOURCE_EXHAUSTED).transient
    assert not typed(grpc.StatusCode.RESOURCE_EXHAUSTED, error_info("RESPONSE_TOO_LARGE")).transient
    assert typed(grpc.StatusCode.RESOURCE_EXHAUSTED, error_info("OVERLOADED")).transient


@pytest.mark.parametrize(
    "code,cls,transient",
    [
        (grpc.StatusCode.UNAVAILABLE, e.Unavailable, True),
        (grpc.StatusCode.DEADLINE_EXCEEDED, e.DeadlineExceeded, True),
        (grpc.StatusCode.UNAUTHENTICATED, e.Unauthenticated, False),
        (grpc.StatusCode.PERMISSION_DENIED, e.PermissionDenied, False),
        (grpc.StatusCode.INVALID_ARGUMENT, e.InvalidArgument, False),
        (grpc.StatusCode.INTERNAL, e.InternalError, False),
        (grpc.StatusCode.UNKNOWN, e.InternalError, False),
    ],
)
def test_statuses_without_details_map_by_code(code, cls, transient):
    err = e.from_status(code, "boom", [])
    assert type(err) is cls and err.reason is None and err.transient is transient


def test_error_info_of_another_domain_is_ignored():
    err = typed(grpc.StatusCode.ABORTED, error_info("VERSION_MISMATCH", domain="other.example"))
    assert type(err) is e.Aborted and err.reason is None


def test_corrupt_details_do_not_hide_the_status():
    err = e.from_status(grpc.StatusCode.ABORTED, "m", [("grpc-status-details-bin", b"\x0a\xff")])
    assert type(err) is e.Aborted and err.message == "m"


def test_batch_item_failures_become_typed_errors():
    err = e.from_condition_failure("k", "VERSION_MISMATCH", 9, "lost")
    assert isinstance(err, e.VersionMismatch) and err.current_version == 9 and err.key == "k"
    err = e.from_condition_failure("k", "ALREADY_EXISTS", 3, "exists")
    assert isinstance(err, e.AlreadyExists)


def test_str_names_code_and_reason():
    err = typed(grpc.StatusCode.ABORTED, error_info("VERSION_MISMATCH"), message="lost the race")
    assert str(err) == "ABORTED VERSION_MISMATCH: lost the race"
