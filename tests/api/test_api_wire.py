"""Wire compatibility of the generated etcd v3 API: names, field numbers, services."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import Descriptor

from consensus.api import generate
from consensus.api.gen.etcd.authpb import auth_pb2
from consensus.api.gen.etcd.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from consensus.api.gen.etcd.mvccpb import kv_pb2
from consensus.api.gen.flagstaff.audit.v1 import audit_pb2


def numbers(message: Descriptor) -> dict[str, int]:
    return {f.name: f.number for f in message.fields}


def test_packages_and_full_names() -> None:
    assert rpc_pb2.DESCRIPTOR.package == "etcdserverpb"
    assert kv_pb2.DESCRIPTOR.package == "mvccpb"
    assert auth_pb2.DESCRIPTOR.package == "authpb"
    assert rpc_pb2.RangeRequest.DESCRIPTOR.full_name == "etcdserverpb.RangeRequest"
    assert kv_pb2.KeyValue.DESCRIPTOR.full_name == "mvccpb.KeyValue"
    assert auth_pb2.Permission.DESCRIPTOR.full_name == "authpb.Permission"
    field = rpc_pb2.RangeResponse.DESCRIPTOR.fields_by_name["kvs"]
    assert field.message_type.full_name == "mvccpb.KeyValue"


def test_range_request_fields() -> None:
    assert numbers(rpc_pb2.RangeRequest.DESCRIPTOR) == {
        "key": 1, "range_end": 2, "limit": 3, "revision": 4, "sort_order": 5,
        "sort_target": 6, "serializable": 7, "keys_only": 8, "count_only": 9,
        "min_mod_revision": 10, "max_mod_revision": 11, "min_create_revision": 12,
        "max_create_revision": 13,
    }
    assert dict(rpc_pb2.RangeRequest.SortOrder.items()) == {"NONE": 0, "ASCEND": 1, "DESCEND": 2}
    assert dict(rpc_pb2.RangeRequest.SortTarget.items()) == {
        "KEY": 0, "VERSION": 1, "CREATE": 2, "MOD": 3, "VALUE": 4
    }
    assert numbers(rpc_pb2.RangeResponse.DESCRIPTOR) == {"header": 1, "kvs": 2, "more": 3, "count": 4}


def test_compare_has_its_oneof_and_range_end_64() -> None:
    compare = rpc_pb2.Compare.DESCRIPTOR
    assert numbers(compare) == {
        "result": 1, "target": 2, "key": 3, "version": 4, "create_revision": 5,
        "mod_revision": 6, "value": 7, "lease": 8, "range_end": 64,
    }
    union = compare.oneofs_by_name["target_union"]
    assert [f.name for f in union.fields] == [
        "version", "create_revision", "mod_revision", "value", "lease"
    ]
    assert dict(rpc_pb2.Compare.CompareResult.items()) == {
        "EQUAL": 0, "GREATER": 1, "LESS": 2, "NOT_EQUAL": 3
    }
    assert dict(rpc_pb2.Compare.CompareTarget.items()) == {
        "VERSION": 0, "CREATE": 1, "MOD": 2, "VALUE": 3, "LEASE": 4
    }


def test_txn_and_request_ops() -> None:
    assert numbers(rpc_pb2.RequestOp.DESCRIPTOR) == {
        "request_range": 1, "request_put": 2, "request_delete_range": 3, "request_txn": 4
    }
    assert numbers(rpc_pb2.ResponseOp.DESCRIPTOR) == {
        "response_range": 1, "response_put": 2, "response_delete_range": 3, "response_txn": 4
    }
    assert numbers(rpc_pb2.TxnRequest.DESCRIPTOR) == {"compare": 1, "success": 2, "failure": 3}
    assert numbers(rpc_pb2.TxnResponse.DESCRIPTOR) == {"header": 1, "succeeded": 2, "responses": 3}
    assert numbers(rpc_pb2.PutRequest.DESCRIPTOR) == {
        "key": 1, "value": 2, "lease": 3, "prev_kv": 4, "ignore_value": 5, "ignore_lease": 6
    }
    assert numbers(rpc_pb2.DeleteRangeRequest.DESCRIPTOR) == {"key": 1, "range_end": 2, "prev_kv": 3}


def test_watch_messages() -> None:
    assert numbers(rpc_pb2.WatchCreateRequest.DESCRIPTOR) == {
        "key": 1, "range_end": 2, "start_revision": 3, "progress_notify": 4, "filters": 5,
        "prev_kv": 6, "watch_id": 7, "fragment": 8,
    }
    assert rpc_pb2.WatchCreateRequest.DESCRIPTOR.fields_by_name["filters"].is_repeated
    assert numbers(rpc_pb2.WatchRequest.DESCRIPTOR) == {
        "create_request": 1, "cancel_request": 2, "progress_request": 3
    }
    assert numbers(rpc_pb2.WatchResponse.DESCRIPTOR) == {
        "header": 1, "watch_id": 2, "created": 3, "canceled": 4, "compact_revision": 5,
        "cancel_reason": 6, "fragment": 7, "events": 11,
    }
    assert numbers(kv_pb2.KeyValue.DESCRIPTOR) == {
        "key": 1, "create_revision": 2, "mod_revision": 3, "version": 4, "value": 5, "lease": 6
    }
    assert numbers(kv_pb2.Event.DESCRIPTOR) == {"type": 1, "kv": 2, "prev_kv": 3}


def test_lease_maintenance_cluster_and_auth_messages() -> None:
    assert numbers(rpc_pb2.ResponseHeader.DESCRIPTOR) == {
        "cluster_id": 1, "member_id": 2, "revision": 3, "raft_term": 4
    }
    assert numbers(rpc_pb2.LeaseTimeToLiveResponse.DESCRIPTOR) == {
        "header": 1, "ID": 2, "TTL": 3, "grantedTTL": 4, "keys": 5
    }
    assert numbers(rpc_pb2.HashKVResponse.DESCRIPTOR) == {
        "header": 1, "hash": 2, "compact_revision": 3, "hash_revision": 4
    }
    assert numbers(rpc_pb2.Member.DESCRIPTOR) == {
        "ID": 1, "name": 2, "peerURLs": 3, "clientURLs": 4, "isLearner": 5
    }
    status = numbers(rpc_pb2.StatusResponse.DESCRIPTOR)
    assert status["dbSizeInUse"] == 9 and status["isLearner"] == 10
    assert dict(rpc_pb2.AlarmType.items()) == {"NONE": 0, "NOSPACE": 1, "CORRUPT": 2}
    assert numbers(rpc_pb2.AuthUserAddRequest.DESCRIPTOR) == {
        "name": 1, "password": 2, "options": 3, "hashedPassword": 4
    }
    assert numbers(rpc_pb2.AuthRoleRevokePermissionRequest.DESCRIPTOR) == {
        "role": 1, "key": 2, "range_end": 3
    }
    assert numbers(auth_pb2.User.DESCRIPTOR) == {"name": 1, "password": 2, "roles": 3, "options": 4}
    assert numbers(auth_pb2.Permission.DESCRIPTOR) == {"permType": 1, "key": 2, "range_end": 3}
    assert dict(auth_pb2.Permission.Type.items()) == {"READ": 0, "WRITE": 1, "READWRITE": 2}
    assert dict(rpc_pb2.DowngradeRequest.DowngradeAction.items()) == {
        "VALIDATE": 0, "ENABLE": 1, "CANCEL": 2
    }


def test_bytes_on_the_wire() -> None:
    request = rpc_pb2.RangeRequest(key=b"a", range_end=b"b", revision=5, sort_order=2)
    assert request.SerializeToString() == b"\x0a\x01a\x12\x01b\x20\x05\x28\x02"
    compare = rpc_pb2.Compare(key=b"k", mod_revision=3, range_end=b"\x00")
    assert compare.SerializeToString() == b"\x1a\x01k\x30\x03\x82\x04\x01\x00"  # 64 -> 0x82 0x04
    create = rpc_pb2.WatchCreateRequest(key=b"k", fragment=True)
    assert create.SerializeToString() == b"\x0a\x01k\x40\x01"


SERVICES = {
    "KV": {"Range": "uu", "Put": "uu", "DeleteRange": "uu", "Txn": "uu", "Compact": "uu"},
    "Watch": {"Watch": "ss"},
    "Lease": {"LeaseGrant": "uu", "LeaseRevoke": "uu", "LeaseKeepAlive": "ss",
              "LeaseTimeToLive": "uu", "LeaseLeases": "uu"},
    "Cluster": {"MemberAdd": "uu", "MemberRemove": "uu", "MemberUpdate": "uu",
                "MemberList": "uu", "MemberPromote": "uu"},
    "Maintenance": {"Alarm": "uu", "Status": "uu", "Defragment": "uu", "Hash": "uu",
                    "HashKV": "uu", "Snapshot": "us", "MoveLeader": "uu", "Downgrade": "uu"},
    "Auth": {"AuthEnable": "uu", "AuthDisable": "uu", "AuthStatus": "uu", "Authenticate": "uu",
             "UserAdd": "uu", "UserGet": "uu", "UserList": "uu", "UserDelete": "uu",
             "UserChangePassword": "uu", "UserGrantRole": "uu", "UserRevokeRole": "uu",
             "RoleAdd": "uu", "RoleGet": "uu", "RoleList": "uu", "RoleDelete": "uu",
             "RoleGrantPermission": "uu", "RoleRevokePermission": "uu"},
}


def test_all_six_services_and_their_methods() -> None:
    services = rpc_pb2.DESCRIPTOR.services_by_name
    assert set(services) == set(SERVICES)
    for name, methods in SERVICES.items():
        service = services[name]
        assert service.full_name == f"etcdserverpb.{name}"
        found = {
            m.name: ("s" if m.client_streaming else "u") + ("s" if m.server_streaming else "u")
            for m in service.methods
        }
        assert found == methods, name
        assert hasattr(rpc_pb2_grpc, f"{name}Stub")
        assert hasattr(rpc_pb2_grpc, f"{name}Servicer")
        assert hasattr(rpc_pb2_grpc, f"add_{name}Servicer_to_server")
    method = services["KV"].methods_by_name["Range"]
    assert (method.input_type.name, method.output_type.name) == ("RangeRequest", "RangeResponse")
    txn = services["KV"].methods_by_name["Txn"]
    assert txn.output_type.full_name == "etcdserverpb.TxnResponse"


def _clear_json_names(message: descriptor_pb2.DescriptorProto) -> None:
    for field in message.field:
        field.ClearField("json_name")
    for nested in message.nested_type:
        _clear_json_names(nested)


def test_generated_code_matches_the_proto_sources(tmp_path: Path) -> None:
    from grpc_tools import protoc

    out = tmp_path / "set.pb"
    protos = [str(p) for p in generate.proto_files()]
    assert protoc.main(["protoc", f"-I{generate.PROTO_ROOT}", f"--descriptor_set_out={out}", *protos]) == 0
    fresh = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    for file in fresh.file:  # protoc fills json_name in descriptor sets, not in Python code
        for message in file.message_type:
            _clear_json_names(message)
    committed = {
        module.DESCRIPTOR.name: descriptor_pb2.FileDescriptorProto.FromString(module.DESCRIPTOR.serialized_pb)
        for module in (rpc_pb2, kv_pb2, auth_pb2, audit_pb2)
    }
    assert {f.name: f for f in fresh.file} == committed, "run `python -m consensus.api.generate`"


def test_relative_import_rewriting() -> None:
    text = "from etcd.mvccpb import kv_pb2 as x\nfrom google.protobuf import descriptor\n"
    rewritten = generate.rewrite_imports(text, "etcd.etcdserverpb.rpc_pb2", {"etcd.mvccpb"})
    assert rewritten == "from ..mvccpb import kv_pb2 as x\nfrom google.protobuf import descriptor\n"
    grpc_text = "from etcd.etcdserverpb import rpc_pb2 as y\n"
    assert generate.rewrite_imports(
        grpc_text, "etcd.etcdserverpb.rpc_pb2_grpc", {"etcd.etcdserverpb"}
    ) == "from . import rpc_pb2 as y\n"
    with pytest.raises(ValueError):
        generate._relative_import("a.b", "other.pkg")


def test_generated_modules_import_without_sys_path_tricks() -> None:
    code = (
        "import sys\n"
        "from consensus.api.gen.etcd.etcdserverpb import rpc_pb2_grpc\n"
        "assert 'etcd' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])
