import json
import pathlib
import uuid

import pytest

from state_service_client import InvalidArgument, Op, PutItem, RetryPolicy, service_config
from state_service_client._base import Core

REPO_CONFIG = pathlib.Path(__file__).resolve().parents[2] / "service_config.json"


def core(**kw):
    return Core("127.0.0.1:1", **kw)


def test_every_write_gets_a_fresh_uuid_request_id_and_is_then_safe():
    c = core()
    a, safe = c.put("k", 1, False, False, None, False, None)
    b, _ = c.put("k", 1, False, False, None, False, None)
    assert safe
    assert uuid.UUID(a.request_id).version == 4
    assert a.request_id != b.request_id


def test_an_explicit_request_id_is_kept():
    req, _ = core().increment("k", 1, None, "wc-3-17")
    assert req.request_id == "wc-3-17"


def test_without_request_ids_only_conditional_writes_are_safe():
    c = core(request_ids=False)
    req, safe = c.put("k", 1, False, False, None, False, None)
    assert req.request_id == "" and not safe
    _, safe = c.put("k", 1, False, False, 7, False, None)
    assert safe
    _, safe = c.increment("k", 1, None, None)
    assert not safe
    assert c.options[0][0] == "grpc.service_config"
    cfg = json.loads(c.options[0][1])
    assert len(cfg["methodConfig"]) == 1  # reads only


def test_batch_delete_is_never_retried():
    _, safe = core().batch_delete(["a"])
    assert not safe


def test_conditions_are_exclusive():
    with pytest.raises(InvalidArgument):
        core().put("k", 1, True, False, 3, False, None)


def test_ttls_are_milliseconds():
    req, _ = core().put_with_ttl("k", 1, 1.2346, False, False, None, None)
    assert (req.ttl.seconds, req.ttl.nanos) == (1, 235_000_000)


def test_transact_builds_each_op_kind():
    req, safe = core().transact(
        [
            Op.put("a", 1, if_version=3),
            Op.put_with_ttl("b", "x", 5, if_absent=True),
            Op.delete("c"),
            Op.increment("d", 2),
        ],
        None,
    )
    assert safe and req.request_id
    kinds = [o.WhichOneof("op") for o in req.ops]
    assert kinds == ["put", "put_with_ttl", "delete", "increment"]
    assert req.ops[0].put.condition.if_version == 3
    assert req.ops[1].put_with_ttl.condition.HasField("if_absent")
    assert req.ops[3].increment.delta == 2


def test_batch_put_accepts_tuples_and_items_each_with_its_own_id():
    (req, keys), safe = core().batch_put([("a", 1), PutItem("b", 2, ttl=1, if_absent=True)])
    assert keys == ["a", "b"] and safe
    assert req.items[0].request_id != req.items[1].request_id
    assert req.items[1].ttl.seconds == 1


def test_tls_is_inferred_from_https_and_certificates():
    assert core().credentials is None
    assert Core("https://h:1").credentials is not None
    assert Core("h:1", root_certificates=b"x").credentials is not None
    assert Core("http://h:1").target == "h:1"


def test_credentials_become_metadata():
    c = core(token="t0k", tenant="team-a")
    assert ("authorization", "Bearer t0k") in c.metadata
    assert ("x-tenant-id", "team-a") in c.metadata


def test_backoff_is_jittered_and_capped():
    p = RetryPolicy()
    for attempt in range(40):
        base = min(0.05 * 2**attempt, 2.0)
        assert base / 2 <= p.backoff(attempt) <= base


def test_packaged_service_config_is_the_repository_one():
    if REPO_CONFIG.exists():  # running from a checkout (always, in CI)
        assert service_config() == json.loads(REPO_CONFIG.read_text())
    assert [m["retryPolicy"]["retryableStatusCodes"] for m in service_config()["methodConfig"]] == [
        ["UNAVAILABLE", "DEADLINE_EXCEEDED"]
    ] * 2
