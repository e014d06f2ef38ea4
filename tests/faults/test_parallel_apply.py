"""Scale-out proof: several appliers of one plan (the DAG's mapped apply tasks, here threads and a
process with their own connections and clients) claim op batches with FOR UPDATE SKIP LOCKED through a
fault-injecting proxy in front of the real scim2-server; one of them is SIGKILLed and rerun. The LMS
ends exactly equal to the desired state, no op is sent by two shards, phase 2 (managers, members)
waits for the other shards' phase-1 ops."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from hrlms.sync.apply import ApplyHalted, apply_plan
from hrlms.sync.plan import make_plan
from hrlms.warehouse import db

from .conftest import D
from .test_fault_injection import day1

PLUGINS = str(Path(__file__).resolve().parents[2] / "plugins")
SHARDS = 3

CHILD = r"""
import os, sys
from hrlms.warehouse import db
from hrlms.sync.apply import apply_plan
from hrlms.sync.scim import LmsConfig, ScimClient
cfg = LmsConfig(os.environ["HRLMS_LMS_URL"], os.environ["HRLMS_LMS_TOKEN"], timeout=(2.0, 1.0), backoff_base=0.1)
with db.connect() as conn, ScimClient(cfg) as client:
    apply_plan(conn, int(sys.argv[1]), client, use_bulk=False, batch_size=10, concurrency=2,
               shard=(int(sys.argv[2]), int(sys.argv[3])), wait_seconds=30)
"""


def _shard(world, url: str, plan_id: int, index: int, results: dict, **kw) -> None:
    with db.connect(url) as conn, world.client(kw.pop("base_url"), pool_size=2) as client:
        try:
            results[index] = apply_plan(conn, plan_id, client, shard=(index, SHARDS), use_bulk=False,
                                        concurrency=2, **kw)
        except ApplyHalted as halted:
            results[index] = halted.result


def test_parallel_shards_apply_one_plan_exactly_once(world, make_proxy, fresh_db, monkeypatch):
    monkeypatch.setenv("HRLMS_ESCROW_BASE_SECONDS", "0.2")
    monkeypatch.setenv("HRLMS_ESCROW_MAX_SECONDS", "2")
    proxy = make_proxy(fault_rate=0.1, seed=31)
    world.set_desired(*day1())
    plan_id = make_plan(world.conn, logical_date=D, snapshot_id=1).plan_id
    phase1 = world.count("select count(*) from sync.ops where plan_id = %s and phase = 1", plan_id)
    phase2 = world.count("select count(*) from sync.ops where plan_id = %s and phase = 2", plan_id)
    assert phase1 > 250 and phase2 > 50

    results: dict[int, object] = {}
    threads = [threading.Thread(target=_shard, args=(world, fresh_db, plan_id, i, results),
                                kwargs={"base_url": proxy.base_url, "batch_size": 10, "wait_seconds": 60})
               for i in range(SHARDS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert set(results) == set(range(SHARDS))
    # Every shard did a share of the work, and no op was claimed twice (attempts > 1 only after a
    # transport failure made it escrow, which the next plan re-plans as a new op).
    by_shard = dict(world.conn.execute(
        "select claimed_by, count(*) from sync.ops where plan_id = %s group by claimed_by", (plan_id,)).fetchall())
    assert set(by_shard) == {"0", "1", "2"} and min(by_shard.values()) >= 20, by_shard
    assert world.count("select count(*) from sync.ops where plan_id = %s and attempts > 1", plan_id) == 0
    assert world.count("select count(*) from sync.ops where plan_id = %s and status in ('pending', 'sending')",
                       plan_id) == 0
    with world.client(proxy.base_url, pool_size=4) as client:
        world.converge(client, use_bulk=False, concurrency=4)
    world.assert_lms_equals_desired(ever_active={p["person_id"] for p in world.people if p["is_active"]})


def test_a_killed_shard_takes_back_only_its_own_ops(world, make_proxy, fresh_db, monkeypatch):
    proxy = make_proxy(fault_rate=0.0, seed=5)
    world.set_desired(*day1())
    plan_id = make_plan(world.conn, logical_date=D, snapshot_id=1).plan_id
    env = {**os.environ, "PYTHONPATH": PLUGINS, "HRLMS_LMS_URL": proxy.base_url, "HRLMS_LMS_TOKEN": world.token,
           "WAREHOUSE_URL": fresh_db}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(plan_id), "1", str(SHARDS)], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while world.count("select count(*) from sync.ops where plan_id = %s and claimed_by = '1' "
                          "and status = 'applied'", plan_id) < 30 or not world.count(
                "select count(*) from sync.ops where plan_id = %s and status = 'sending'", plan_id):
            assert time.monotonic() < deadline and child.poll() is None, "shard 1 ended before it could be killed"
            time.sleep(0.01)
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(timeout=30)
        if child.stdout:
            child.stdout.close()
    left = world.count("select count(*) from sync.ops where plan_id = %s and status = 'sending'", plan_id)
    assert left > 0, "the kill should leave shard 1's batch 'sending'"

    # Shards 0 and 2 go on: they do not take shard 1's ops (their outcome is unknown) and give up
    # waiting for them after wait_seconds; everything else is applied.
    results: dict[int, object] = {}
    for i in (0, 2):
        _shard(world, fresh_db, plan_id, i, results, base_url=proxy.base_url, batch_size=10, wait_seconds=1)
    assert world.count("select count(*) from sync.ops where plan_id = %s and status = 'sending' "
                       "and claimed_by = '1'", plan_id) == left
    # The Airflow retry of shard 1 takes its ops back (verified by externalId first: no duplicates).
    _shard(world, fresh_db, plan_id, 1, results, base_url=proxy.base_url, batch_size=10, wait_seconds=1)
    assert world.count("select count(*) from sync.ops where plan_id = %s and status <> 'applied'", plan_id) == 0
    assert world.conn.execute("select status from sync.plans where plan_id = %s", (plan_id,)).fetchone()[0] == "applied"
    world.assert_lms_equals_desired(ever_active={p["person_id"] for p in world.people if p["is_active"]})
