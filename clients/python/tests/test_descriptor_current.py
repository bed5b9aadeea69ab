"""The checked-in descriptor must be the one protoc builds from the proto."""

import pathlib
import subprocess
import sys

from google.protobuf import descriptor_pb2

PKG = pathlib.Path(__file__).resolve().parents[1] / "src" / "state_service_client"
PROTO_ROOT = pathlib.Path(__file__).resolve().parents[3] / "proto"
REGEN = (
    "python -m grpc_tools.protoc -I proto "
    "--descriptor_set_out=clients/python/src/state_service_client/stateservice_v1.binpb "
    "stateservice/v1/state.proto"
)


def test_descriptor_matches_the_proto(tmp_path):
    out = tmp_path / "fresh.binpb"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"--descriptor_set_out={out}",
            "stateservice/v1/state.proto",
        ],
        check=True,
    )
    fresh = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    checked_in = descriptor_pb2.FileDescriptorSet.FromString((PKG / "stateservice_v1.binpb").read_bytes())
    assert checked_in == fresh, f"stale descriptor: regenerate from the repository root with\n  {REGEN}"


def test_every_rpc_of_the_service_has_a_method_entry():
    from state_service_client import _proto

    fds = descriptor_pb2.FileDescriptorSet.FromString((PKG / "stateservice_v1.binpb").read_bytes())
    (service,) = [s for f in fds.file for s in f.service if s.name == "StateService"]
    unary = {m.name for m in service.method if not m.server_streaming and not m.client_streaming}
    assert unary == set(_proto.METHODS)
