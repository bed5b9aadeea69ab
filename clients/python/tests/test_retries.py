"""The retry loop against a fake in-process server: a retried write resends
its request id; what is not safe to repeat is attempted once."""

import asyncio
from concurrent import futures

import grpc
import pytest

from state_service_client import AsyncStateClient, ConditionFailed, RetryPolicy, StateClient, Unavailable
from state_service_client import _proto as pb

FAST = RetryPolicy(initial_backoff=0.001, max_backoff=0.005, max_elapsed=5.0)


class Fake:
    """Fails the first `failures` calls with `code`, then answers."""

    def __init__(self, failures, code=grpc.StatusCode.UNAVAILABLE):
        self.failures, self.code, self.request_ids = failures, code, []

    def increment(self, request, context):
        self.request_ids.append(request.request_id)
        if len(self.request_ids) <= self.failures:
            context.abort(self.code, "injected")
        return pb.IncrementResponse(value=1, version=1)

    def batch_delete(self, request, context):
        self.request_ids.append("")
        context.abort(self.code, "injected")


@pytest.fixture
def serve():
    servers = []

    def start(fake):
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        handlers = {
            "Increment": grpc.unary_unary_rpc_method_handler(
                fake.increment, pb.IncrementRequest.FromString, pb.IncrementResponse.SerializeToString
            ),
            "BatchDelete": grpc.unary_unary_rpc_method_handler(
                fake.batch_delete, pb.BatchDeleteRequest.FromString, pb.BatchDeleteResponse.SerializeToString
            ),
        }
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(pb.SERVICE, handlers)])
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        servers.append(server)
        return f"127.0.0.1:{port}"

    yield start
    for s in servers:
        s.stop(None)


def no_channel_retries():
    # Take gRPC's own retry policy out, so every attempt is the client's.
    return [("grpc.enable_retries", 0)]


def test_retries_of_a_write_reuse_its_request_id(serve):
    fake = Fake(failures=3)
    client = StateClient(serve(fake), retry=FAST, options=no_channel_retries())
    assert client.increment("k").value == 1
    assert len(fake.request_ids) == 4
    assert fake.request_ids[0] and len(set(fake.request_ids)) == 1


def test_the_async_client_reuses_the_request_id_too(serve):
    fake = Fake(failures=2)
    addr = serve(fake)

    async def run():
        async with AsyncStateClient(addr, retry=FAST, options=no_channel_retries()) as c:
            return await c.increment("k")

    assert asyncio.run(run()).value == 1
    assert len(fake.request_ids) == 3 and len(set(fake.request_ids)) == 1


def test_without_request_ids_an_increment_is_attempted_once(serve):
    fake = Fake(failures=1)
    client = StateClient(serve(fake), retry=FAST, request_ids=False, options=no_channel_retries())
    with pytest.raises(Unavailable):
        client.increment("k")
    assert fake.request_ids == [""]


def test_batch_delete_is_attempted_once(serve):
    fake = Fake(failures=1)
    client = StateClient(serve(fake), retry=FAST, options=no_channel_retries())
    with pytest.raises(Unavailable):
        client.batch_delete(["a"])
    assert len(fake.request_ids) == 1


def test_a_failed_condition_is_not_retried(serve):
    fake = Fake(failures=1, code=grpc.StatusCode.FAILED_PRECONDITION)
    client = StateClient(serve(fake), retry=FAST, options=no_channel_retries())
    with pytest.raises(ConditionFailed):
        client.increment("k")
    assert len(fake.request_ids) == 1


def test_the_channel_retry_policy_resends_the_same_request_id(serve):
    # gRPC's own retries (the service config) resend the same bytes.
    fake = Fake(failures=2)
    client = StateClient(serve(fake), retry=RetryPolicy.none())
    assert client.increment("k").value == 1
    assert len(fake.request_ids) == 3 and len(set(fake.request_ids)) == 1
