"""The stateservice.v1 message classes, built at import time from the
descriptor set compiled from ``proto/stateservice/v1/state.proto``
(``stateservice_v1.binpb``, checked in; ``tests/test_descriptor_current.py``
fails when it is stale).

Why not generated ``_pb2.py`` modules: protoc's Python gencode pins the
protobuf runtime to the generator's major/minor version and is marked "NO
CHECKED-IN PROTOBUF GENCODE". A descriptor is plain data: the classes below
work with any protobuf runtime >= 4.22. They live in a private descriptor
pool, so an application that also generated its own stubs from the same
proto does not collide with them.
"""

from __future__ import annotations

from importlib import resources

from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    duration_pb2,
    empty_pb2,
    message_factory,
    struct_pb2,
)

SERVICE = "stateservice.v1.StateService"

_pool = descriptor_pool.DescriptorPool()
for _dep in (duration_pb2, empty_pb2, struct_pb2):
    _pool.Add(descriptor_pb2.FileDescriptorProto.FromString(_dep.DESCRIPTOR.serialized_pb))
_fds = descriptor_pb2.FileDescriptorSet.FromString(
    resources.files(__package__).joinpath("stateservice_v1.binpb").read_bytes()
)
for _file in _fds.file:
    _pool.Add(_file)


def _cls(name: str):
    return message_factory.GetMessageClass(_pool.FindMessageTypeByName(f"stateservice.v1.{name}"))


Value = _cls("Value")
ValueList = _cls("ValueList")
ValueMap = _cls("ValueMap")
Entry = _cls("Entry")
Condition = _cls("Condition")
GetRequest = _cls("GetRequest")
GetResponse = _cls("GetResponse")
PutRequest = _cls("PutRequest")
PutWithTtlRequest = _cls("PutWithTtlRequest")
PutResponse = _cls("PutResponse")
DeleteRequest = _cls("DeleteRequest")
DeleteResponse = _cls("DeleteResponse")
ListRequest = _cls("ListRequest")
ListResponse = _cls("ListResponse")
ExpireRequest = _cls("ExpireRequest")
ExpireResponse = _cls("ExpireResponse")
PersistRequest = _cls("PersistRequest")
PersistResponse = _cls("PersistResponse")
IncrementRequest = _cls("IncrementRequest")
IncrementResponse = _cls("IncrementResponse")
BatchGetRequest = _cls("BatchGetRequest")
BatchGetResponse = _cls("BatchGetResponse")
BatchPutItem = _cls("BatchPutItem")
BatchPutRequest = _cls("BatchPutRequest")
BatchPutResponse = _cls("BatchPutResponse")
BatchDeleteRequest = _cls("BatchDeleteRequest")
BatchDeleteResponse = _cls("BatchDeleteResponse")
TransactOp = _cls("TransactOp")
TransactRequest = _cls("TransactRequest")
TransactResponse = _cls("TransactResponse")

#: RPC name -> (request class, response class).
METHODS = {
    "Get": (GetRequest, GetResponse),
    "Put": (PutRequest, PutResponse),
    "PutWithTtl": (PutWithTtlRequest, PutResponse),
    "Delete": (DeleteRequest, DeleteResponse),
    "List": (ListRequest, ListResponse),
    "Expire": (ExpireRequest, ExpireResponse),
    "Persist": (PersistRequest, PersistResponse),
    "Increment": (IncrementRequest, IncrementResponse),
    "BatchGet": (BatchGetRequest, BatchGetResponse),
    "BatchPut": (BatchPutRequest, BatchPutResponse),
    "BatchDelete": (BatchDeleteRequest, BatchDeleteResponse),
    "Transact": (TransactRequest, TransactResponse),
}
