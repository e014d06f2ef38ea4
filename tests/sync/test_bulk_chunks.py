"""/Bulk request sizing: within the LMS's maxOperations / maxPayloadSize and a membership budget."""
from __future__ import annotations

from hrlms.sync.apply import _chunks


def _member_op(i: int, n: int) -> tuple[dict, dict]:
    members = [f"P{i:03d}{k:04d}" for k in range(n)]
    req = {"method": "PATCH", "path": f"/Groups/g{i}",
           "data": {"Operations": [{"op": "add", "path": "members", "value": [{"value": m} for m in members]}]}}
    return {"op_id": i, "members": members}, req


def _user_op(i: int) -> tuple[dict, dict]:
    return {"op_id": 1000 + i, "members": None}, {"method": "POST", "path": "/Users", "data": {"userName": f"u{i}"}}


def test_membership_patches_are_split_by_the_member_budget():
    reqs = [_member_op(i, 500) for i in range(36)]
    chunks = list(_chunks(reqs, 1000, 10_000_000, max_members=2000))
    assert [len(c) for c in chunks] == [4] * 9
    assert [op["op_id"] for c in chunks for op, _ in c] == list(range(36))      # order kept, nothing lost


def test_a_single_op_above_the_budget_still_goes_alone_and_users_do_not_count():
    reqs = [_member_op(0, 2500), *(_user_op(i) for i in range(10)), _member_op(1, 10)]
    chunks = list(_chunks(reqs, 1000, 10_000_000, max_members=2000))
    assert [len(c) for c in chunks] == [1, 11]


def test_max_operations_and_payload_size_still_apply():
    reqs = [_user_op(i) for i in range(25)]
    assert [len(c) for c in _chunks(reqs, 10, 10_000_000, max_members=2000)] == [10, 10, 5]
    small = list(_chunks(reqs, 1000, 600, max_members=2000))
    assert len(small) > 1 and all(sum(len(str(r)) for _, r in c) < 600 for c in small)
