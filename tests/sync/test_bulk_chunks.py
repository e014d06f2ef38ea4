"""/Bulk request sizing: within the LMS's maxOperations / maxPayloadSize and a membership budget."""
from __future__ import annotations

from hrlms.sync.apply import _chunks, _group_patches


def _member_op(i: int, n: int, group: int | None = None, op_type: str = "add_members") -> tuple[list[dict], dict]:
    members = [f"P{i:03d}{k:04d}" for k in range(n)]
    ops = ([{"op": "add", "path": "members", "value": [{"value": m} for m in members]}] if op_type == "add_members"
           else [{"op": "remove", "path": f'members[value eq "{m}"]'} for m in members])
    req = {"method": "PATCH", "path": f"/Groups/g{i if group is None else group}", "data": {"Operations": ops}}
    return [{"op_id": i, "op_type": op_type, "members": members}], req


def _user_op(i: int) -> tuple[list[dict], dict]:
    return ([{"op_id": 1000 + i, "op_type": "create_user", "members": None}],
            {"method": "POST", "path": "/Users", "data": {"userName": f"u{i}"}})


def test_membership_patches_are_split_by_the_member_budget():
    reqs = [_member_op(i, 500) for i in range(36)]
    chunks = list(_chunks(reqs, 1000, 10_000_000, max_members=2000))
    assert [len(c) for c in chunks] == [4] * 9
    assert [op["op_id"] for c in chunks for ops, _ in c for op in ops] == list(range(36))   # order kept, nothing lost


def test_a_single_op_above_the_budget_still_goes_alone_and_users_do_not_count():
    reqs = [_member_op(0, 2500), *(_user_op(i) for i in range(10)), _member_op(1, 10)]
    chunks = list(_chunks(reqs, 1000, 10_000_000, max_members=2000))
    assert [len(c) for c in chunks] == [1, 11]


def test_max_operations_and_payload_size_still_apply():
    reqs = [_user_op(i) for i in range(25)]
    assert [len(c) for c in _chunks(reqs, 10, 10_000_000, max_members=2000)] == [10, 10, 5]
    small = list(_chunks(reqs, 1000, 600, max_members=2000))
    assert len(small) > 1 and all(sum(len(str(r)) for _, r in c) < 600 for c in small)


def _single(unit: tuple[list[dict], dict]) -> tuple[dict, dict]:
    return unit[0][0], unit[1]


def test_a_groups_membership_patches_go_as_one_request_within_the_member_budget():
    # g0 gets 500 + 258 added and 3 removed (filtered), g1 one add; then 1,300 more for g0: over the budget
    reqs = [_single(u) for u in (_member_op(0, 500, 0), _member_op(1, 4, 1), _member_op(2, 258, 0),
                                 _member_op(3, 3, 0, "remove_members"), _user_op(0), _member_op(4, 1300, 0))]
    units = _group_patches(reqs, max_members=2000)
    assert [[op["op_id"] for op in ops] for ops, _req in units] == [[0, 2, 3], [1], [1000], [4]]
    body = units[0][1]["data"]["Operations"]
    # the adds as one add of both lists (in op order), then the removes
    assert [o["op"] for o in body] == ["add", "remove", "remove", "remove"]
    assert [v["value"] for v in body[0]["value"]] == reqs[0][0]["members"] + reqs[2][0]["members"]
    assert units[0][1]["path"] == "/Groups/g0" and units[1][1] == reqs[1][1]
    # the member budget still counts every op of a request
    assert [len(c) for c in _chunks(units, 1000, 10_000_000, max_members=2000)] == [3, 1]
