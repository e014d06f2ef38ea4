"""Daily change sets applied in place to the population (the next day's full snapshot).

Every kind with a non-zero share happens at least once a day so small test populations still
exercise hires, terminations, transfers, reorgs, rehires and renames. A person is touched by at
most one change per day, which keeps the change list unambiguous for tests.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np

from .population import Population
from .reference import ACTIVE, LEAVE, PREHIRE, TERMINATED


@dataclass(frozen=True)
class Churn:
    """Daily change rates. `total` is the share of all rows changed per day, split by the shares."""

    total: float = 0.005
    hire: float = 0.30
    terminate: float = 0.25
    transfer: float = 0.25
    rehire: float = 0.05
    rename: float = 0.15
    reorg_units: float = 0.002         # share of org units moved under another parent per day
    future_hire_share: float = 0.4     # hires that start in 1-30 days (status P)
    future_termination_share: float = 0.4  # terminations dated 1-30 days ahead (status stays A)
    rename_unit_share: float = 0.3     # reorgs that also rename the moved unit

    def count(self, kind: str, rows: int) -> int:
        share = getattr(self, kind)
        return 0 if share <= 0 or self.total <= 0 else max(1, round(self.total * rows * share))


def _iso(ordinal: int) -> str:
    return date.fromordinal(ordinal).isoformat()


def _pick(rng: np.random.Generator, eligible: np.ndarray, k: int) -> np.ndarray:
    idx = np.nonzero(eligible)[0]
    return np.sort(rng.choice(idx, size=min(k, len(idx)), replace=False)) if len(idx) else idx


def _leaf_units(pop: Population) -> np.ndarray:
    return np.nonzero(np.asarray(pop.org.is_leaf))[0]


def apply_day(pop: Population, day: date, churn: Churn, rng: np.random.Generator) -> list[dict]:
    """Move the population from day-1 to `day`; returns the change list recorded in the truth file."""
    d = day.toordinal()
    before = pop.status_on(d - 1)
    rows = len(pop)
    heads = pop.is_head()
    touched = heads.copy()             # managers are never terminated/transferred (keeps the tree sound)
    changes: list[dict] = []
    leaves = _leaf_units(pop)

    # Terminations: future-dated ones keep status A until the termination date has passed.
    live = (before == ACTIVE) | (before == LEAVE)
    who = _pick(rng, live & ~touched & (pop.term == 0), churn.count("terminate", rows))
    future = rng.random(len(who)) < churn.future_termination_share
    # Never before the hire date: termination_before_hire is a defect injected (and recorded) at write time.
    pop.term[who] = np.maximum(pop.hire[who], np.where(future, d + rng.integers(1, 31, len(who)),
                                                       d - rng.integers(1, 6, len(who))))
    pop.lwd[who] = np.maximum(pop.hire[who], pop.term[who] - np.where(rng.random(len(who)) < 0.8, 0,
                                                                       rng.integers(1, 4, len(who))))
    touched[who] = True
    changes += [{"kind": "terminate", "person_id": pop.pid_str[r], "termination_date": _iso(int(pop.term[r])),
                 "future": bool(f)} for r, f in zip(who.tolist(), future.tolist())]

    # Rehires: same person_id, status A from today, new unit and job, termination cleared.
    who = _pick(rng, (before == TERMINATED) & ~touched, churn.count("rehire", rows))
    pop.unit[who] = leaves[rng.integers(0, len(leaves), len(who))]
    pop.job[who] = pop.draw_jobs(rng, pop.dept_of(who), pop.etype[who])
    pop.hire[who] = pop.start[who] = d
    pop.term[who] = pop.lwd[who] = 0
    pop.leave[who] = False
    touched[who] = True
    changes += [{"kind": "rehire", "person_id": pop.pid_str[r], "hire_date": day.isoformat(),
                 "org_unit_code": pop.org.codes[int(pop.unit[r])]} for r in who.tolist()]

    # Transfers: new leaf unit; new job when the department changes, sometimes within it too.
    who = _pick(rng, (before == ACTIVE) & ~touched, churn.count("transfer", rows))
    old_units = pop.unit[who].copy()
    new_units = leaves[rng.integers(0, len(leaves), len(who))]
    new_units = np.where(new_units == old_units, leaves[(np.searchsorted(leaves, new_units) + 1) % len(leaves)],
                         new_units)
    old_dept = pop.dept_of(who)
    pop.unit[who] = new_units
    rejob = (pop.dept_of(who) != old_dept) | (rng.random(len(who)) < 0.3)
    pop.job[who[rejob]] = pop.draw_jobs(rng, pop.dept_of(who[rejob]), pop.etype[who[rejob]])
    touched[who] = True
    changes += [{"kind": "transfer", "person_id": pop.pid_str[r], "from_org_unit": pop.org.codes[int(a)],
                 "to_org_unit": pop.org.codes[int(b)], "job_changed": bool(j)}
                for r, a, b, j in zip(who.tolist(), old_units.tolist(), new_units.tolist(), rejob.tolist())]

    # Name changes (marriage): new last name from the same locale; new login and email.
    who = _pick(rng, ((before == ACTIVE) | (before == LEAVE)) & ~touched | heads & (before == ACTIVE),
                churn.count("rename", rows))
    for r in who.tolist():
        old_last, old_login = int(pop.last[r]), pop.username[r]
        lo, hi = next(v for v in pop.pools.last_range.values() if v[0] <= old_last < v[1])
        new_last = lo + (old_last - lo + int(rng.integers(1, max(2, hi - lo)))) % (hi - lo)
        pop.last[r] = new_last
        pop.username[r] = pop.new_login(int(pop.first[r]), new_last)
        changes.append({"kind": "rename", "person_id": pop.pid_str[r], "old_last_name": pop.pools.last[old_last],
                        "new_last_name": pop.pools.last[new_last], "old_username": old_login,
                        "new_username": pop.username[r]})
    touched[who] = True

    # Hires appended last so the picks above only see existing rows.
    k = churn.count("hire", rows)
    future = rng.random(k) < churn.future_hire_share
    start = np.where(future, d + rng.integers(1, 31, k), d).astype(np.int32)
    new_rows = pop.append(rng, leaves[rng.integers(0, len(leaves), k)], start)
    changes += [{"kind": "hire", "person_id": pop.pid_str[r], "start_date": _iso(int(pop.start[r])),
                 "org_unit_code": pop.org.codes[int(pop.unit[r])]} for r in new_rows.tolist()]

    changes += _reorg(pop, churn, rng)

    # Scheduled effects of earlier changes: pre-hires starting, future terminations taking effect.
    after = pop.status_on(d)
    n_old = len(before)
    started = np.nonzero((before == PREHIRE) & (after[:n_old] != PREHIRE) & ~touched[:n_old])[0]
    ended = np.nonzero((before != TERMINATED) & (after[:n_old] == TERMINATED) & ~touched[:n_old])[0]
    changes += [{"kind": "start", "person_id": pop.pid_str[r]} for r in started.tolist()]
    changes += [{"kind": "terminate_effective", "person_id": pop.pid_str[r]} for r in ended.tolist()]
    return changes


def _reorg(pop: Population, churn: Churn, rng: np.random.Generator) -> list[dict]:
    """Move units (depth >= 3) under another unit of the parent's depth; sometimes rename them."""
    org = pop.org
    if churn.reorg_units <= 0:
        return []
    depth = np.asarray(org.depth)
    k = max(1, round(churn.reorg_units * len(org)))
    movable = np.nonzero(depth >= 3)[0]
    out = []
    for u in np.sort(rng.choice(movable, size=min(k, len(movable)), replace=False)).tolist():
        targets = np.nonzero((depth == depth[u] - 1) & (np.arange(len(org)) != org.parent[u]))[0]
        if len(targets) == 0:
            continue
        new_parent = int(targets[rng.integers(0, len(targets))])
        old_parent, old_name = org.parent[u], org.names[u]
        org.parent[u] = new_parent
        if rng.random() < churn.rename_unit_share:
            org.names[u] = f"{org.names[new_parent]} / {org.labels[u]}"
        out.append({"kind": "reorg", "org_unit_code": org.codes[u], "old_parent": org.codes[old_parent],
                    "new_parent": org.codes[new_parent], "old_name": old_name, "new_name": org.names[u]})
    return out
