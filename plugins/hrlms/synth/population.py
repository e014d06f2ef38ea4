"""Columnar in-memory population (numpy arrays + a few string lists).

Columnar storage keeps 1M workers in a few hundred MB and lets status/manager derivation and
file rendering run vectorised; daily changes mutate these arrays in place instead of
regenerating anything.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np

from .names import NamePools
from .org import OrgTree, build_org
from .reference import (
    ACTIVE,
    DEPARTMENTS,
    EXECUTIVE_FAMILY,
    EXECUTIVE_STAFF_JOBS,
    LEAVE,
    LOCATIONS,
    MANAGEMENT_FAMILY,
    MANAGEMENT_JOBS,
    PREHIRE,
    TERMINATED,
    TYPE_WEIGHTS,
)

FIRST_PID = 1_000_001      # person_id "P" + 7 digits
FIRST_EMPNO = 10_001       # employee_number, written zero-padded to 8 digits
PREFERRED_SHARE = 0.08
LOC_CUM = np.cumsum([loc.weight for loc in LOCATIONS]) / sum(loc.weight for loc in LOCATIONS)
LOC_LOCALE = [loc.locale for loc in LOCATIONS]


@dataclass(frozen=True)
class JobCatalog:
    """All jobs (code, title, family) plus per-department index ranges used when drawing jobs."""

    codes: list[str]
    titles: list[str]
    families: list[str]
    dept_range: list[tuple[int, int]]
    dept_intern: list[int]
    management: list[int]     # by depth-1
    executive_staff: list[int]


def build_jobs() -> JobCatalog:
    codes, titles, families = [], [], []
    management = []
    for code, title in MANAGEMENT_JOBS:
        management.append(len(codes))
        codes.append(code), titles.append(title)
        families.append(EXECUTIVE_FAMILY if code.startswith("EXE") else MANAGEMENT_FAMILY)
    staff = []
    for code, title in EXECUTIVE_STAFF_JOBS:
        staff.append(len(codes))
        codes.append(code), titles.append(title), families.append(EXECUTIVE_FAMILY)
    dept_range, dept_intern = [], []
    for spec in DEPARTMENTS:
        lo = len(codes)
        for i, title in enumerate(spec.titles):
            codes.append(f"{spec.code}{i + 1:03d}"), titles.append(title), families.append(spec.family)
        dept_range.append((lo, len(codes)))
        dept_intern.append(len(codes))
        codes.append(f"{spec.code}900"), titles.append(f"{spec.family} Intern"), families.append(spec.family)
    return JobCatalog(codes, titles, families, dept_range, dept_intern, management, staff)


def draw_locations(rng: np.random.Generator, unit_loc: np.ndarray) -> np.ndarray:
    """80% of workers sit at their unit's office, the rest anywhere (remote / satellite offices)."""
    anywhere = np.minimum(np.searchsorted(LOC_CUM, rng.random(len(unit_loc)), side="right"), len(LOCATIONS) - 1)
    return np.where(rng.random(len(unit_loc)) < 0.8, unit_loc, anywhere).astype(np.int16)


@dataclass
class Population:
    """All workers ever exported (terminated ones stay). Row order == person_id order."""

    pools: NamePools
    org: OrgTree
    jobs: JobCatalog
    pid_str: list[str]
    empno_str: list[str]
    first: np.ndarray
    last: np.ndarray
    pref: np.ndarray            # -1 = no preferred name
    username: list[str]
    etype: np.ndarray
    hire: np.ndarray            # date ordinals; 0 = none
    start: np.ndarray
    term: np.ndarray
    lwd: np.ndarray
    leave: np.ndarray
    job: np.ndarray
    unit: np.ndarray
    loc: np.ndarray
    unit_head: np.ndarray       # worker row of each unit's manager
    login_counts: dict[str, int]

    def __len__(self) -> int:
        return len(self.pid_str)

    # ---- derived values -------------------------------------------------------------------
    def status_on(self, day: int) -> np.ndarray:
        """Status is derived from dates so future hires/terminations take effect by themselves."""
        st = np.where(self.leave, LEAVE, ACTIVE).astype(np.int8)
        st[(self.term != 0) & (self.term < day)] = TERMINATED
        st[self.start > day] = PREHIRE
        return st

    def is_head(self) -> np.ndarray:
        mask = np.zeros(len(self), dtype=bool)
        mask[self.unit_head] = True
        return mask

    def manager_index(self) -> np.ndarray:
        """Manager = head of own unit; for a head, head of the parent unit; -1 for the CEO."""
        parent = np.asarray(self.org.parent, dtype=np.int64)
        parent_head = np.where(parent >= 0, self.unit_head[np.maximum(parent, 0)], -1)
        head = self.unit_head[self.unit]
        return np.where(head == np.arange(len(self)), parent_head[self.unit], head)

    def dept_of(self, rows: np.ndarray) -> np.ndarray:
        return np.asarray(self.org.dept, dtype=np.int64)[self.unit[rows]]

    # ---- mutations ------------------------------------------------------------------------
    def new_login(self, first: int, last: int) -> str:
        """first.last, then first.last2, first.last3...; slugs hold no digits so never collide."""
        base = f"{self.pools.first_slug[first]}.{self.pools.last_slug[last]}"
        n = self.login_counts.get(base, 0) + 1
        self.login_counts[base] = n
        return base if n == 1 else f"{base}{n}"

    def draw_jobs(self, rng: np.random.Generator, depts: np.ndarray, etype: np.ndarray) -> np.ndarray:
        """Job from the department's family (interns get the family intern job; root staff exec jobs)."""
        lo = np.asarray([r[0] for r in self.jobs.dept_range])[np.maximum(depts, 0)]
        hi = np.asarray([r[1] for r in self.jobs.dept_range])[np.maximum(depts, 0)]
        out = lo + np.floor(rng.random(len(depts)) * (hi - lo)).astype(np.int64)
        out = np.where(etype == 2, np.asarray(self.jobs.dept_intern)[np.maximum(depts, 0)], out)
        staff = np.asarray(self.jobs.executive_staff)
        out = np.where(depts < 0, staff[rng.integers(0, len(staff), len(depts))], out)
        return out.astype(np.int16)

    def draw_names(self, rng: np.random.Generator, loc: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """First/last/preferred name indexes from the pool of each worker's location locale."""
        n = len(loc)
        first = np.empty(n, dtype=np.int32)
        last = np.empty(n, dtype=np.int32)
        pref = np.full(n, -1, dtype=np.int32)
        locales = np.asarray(LOC_LOCALE, dtype=object)[loc]
        for locale in dict.fromkeys(LOC_LOCALE):
            idx = np.nonzero(locales == locale)[0]
            if len(idx) == 0:
                continue
            first[idx] = self.pools.draw_first(rng, locale, len(idx))
            last[idx] = self.pools.draw_last(rng, locale, len(idx))
            has_pref = idx[rng.random(len(idx)) < PREFERRED_SHARE]
            alt = self.pools.draw_first(rng, locale, len(has_pref))
            pref[has_pref] = np.where(alt != first[has_pref], alt, -1)
        return first, last, pref

    def append(self, rng: np.random.Generator, units: np.ndarray, hire: np.ndarray) -> np.ndarray:
        """Add new hires (ids continue the sequence); returns their row indexes."""
        n0, k = len(self), len(units)
        loc = draw_locations(rng, np.asarray(self.org.loc, dtype=np.int16)[units])
        first, last, pref = self.draw_names(rng, loc)
        etype = rng.choice(3, size=k, p=TYPE_WEIGHTS).astype(np.int8)
        depts = np.asarray(self.org.dept, dtype=np.int64)[units]
        job = self.draw_jobs(rng, depts, etype)
        self.pid_str += [f"P{FIRST_PID + i:07d}" for i in range(n0, n0 + k)]
        self.empno_str += [f"{FIRST_EMPNO + i:08d}" for i in range(n0, n0 + k)]
        self.username += [self.new_login(f, l) for f, l in zip(first.tolist(), last.tolist())]
        zeros = np.zeros(k, dtype=np.int32)
        for name, values in (("first", first), ("last", last), ("pref", pref), ("etype", etype),
                             ("hire", hire), ("start", hire), ("term", zeros), ("lwd", zeros),
                             ("leave", np.zeros(k, dtype=bool)), ("job", job), ("unit", units), ("loc", loc)):
            setattr(self, name, np.concatenate([getattr(self, name), values.astype(getattr(self, name).dtype)]))
        return np.arange(n0, n0 + k)


def _headcounts(org: OrgTree, n: int) -> np.ndarray:
    """Heads (+2 staff at the root, +1 per division) in non-leaf units; the rest fill the leaves."""
    counts = np.zeros(len(org), dtype=np.int64)
    for u in range(len(org)):
        if not org.is_leaf[u]:
            counts[u] = 1 + (2 if org.depth[u] == 1 else 1 if org.depth[u] == 2 else 0)
    leaves = np.nonzero(org.is_leaf)[0]
    rest = n - int(counts.sum()) - len(leaves)
    if rest < 0:
        raise ValueError(f"{n} workers is too few for the org tree; use at least 100")
    cap = np.asarray(org.capacity, dtype=float)[leaves]
    raw = cap / cap.sum() * rest
    extra = np.floor(raw).astype(np.int64)
    extra[np.argsort(-(raw - extra), kind="stable")[: rest - int(extra.sum())]] += 1
    counts[leaves] = 1 + extra
    return counts


def build_population(n: int, start: date, seed: int, pools: NamePools) -> Population:
    """Day-one population: mostly active, some on leave, terminated history, pending hires/exits."""
    if n < 100:
        raise ValueError("workers must be >= 100")
    rng = np.random.default_rng([seed, 0])
    org = build_org(n, rng)
    jobs = build_jobs()
    counts = _headcounts(org, n)
    unit_c = np.repeat(np.arange(len(org)), counts)               # creation order
    head_c = np.concatenate([[0], np.cumsum(counts)[:-1]])
    order = rng.permutation(n)                                      # row r = creation worker order[r]
    inv = np.empty(n, dtype=np.int64)
    inv[order] = np.arange(n)
    unit = unit_c[order].astype(np.int32)
    unit_head = inv[head_c]
    is_head = np.zeros(n, dtype=bool)
    is_head[unit_head] = True
    loc = draw_locations(rng, np.asarray(org.loc, dtype=np.int16)[unit])
    loc[is_head] = np.asarray(org.loc, dtype=np.int16)[unit[is_head]]
    pop = Population(pools, org, jobs, [], [], np.empty(0, np.int32), np.empty(0, np.int32),
                     np.empty(0, np.int32), [], np.empty(0, np.int8), *(np.empty(0, np.int32) for _ in range(4)),
                     np.empty(0, bool), np.empty(0, np.int16), unit, loc, unit_head, {})
    first, last, pref = pop.draw_names(rng, loc)
    etype = rng.choice(3, size=n, p=TYPE_WEIGHTS).astype(np.int8)
    etype[is_head] = 0
    depth = np.asarray(org.depth, dtype=np.int64)[unit]
    job = pop.draw_jobs(rng, np.asarray(org.dept, dtype=np.int64)[unit], etype)
    job[is_head] = np.asarray(jobs.management)[np.minimum(depth[is_head], 5) - 1]

    d0 = start.toordinal()
    hire = (d0 - np.clip(rng.exponential(4 * 365, n), 30, 25 * 365)).astype(np.int32)
    hire[is_head] = d0 - rng.integers(365, 15 * 365, int(is_head.sum()))
    term = np.zeros(n, dtype=np.int32)
    lwd = np.zeros(n, dtype=np.int32)
    leave = np.zeros(n, dtype=bool)
    u = np.where(is_head, 1.0, rng.random(n))
    gone = u < 0.03
    term[gone] = d0 - rng.integers(1, 731, int(gone.sum()))
    hire[gone] = term[gone] - rng.integers(30, 3650, int(gone.sum()))
    pending = (u >= 0.03) & (u < 0.04)
    hire[pending] = d0 + rng.integers(1, 31, int(pending.sum()))
    leaving = (u >= 0.04) & (u < 0.045)
    term[leaving] = d0 + rng.integers(1, 31, int(leaving.sum()))
    leave[(u >= 0.045) & (u < 0.065)] = True
    has_term = term != 0
    lwd[has_term] = term[has_term] - np.where(rng.random(int(has_term.sum())) < 0.8, 0,
                                              rng.integers(1, 4, int(has_term.sum())))

    pop.pid_str = [f"P{FIRST_PID + i:07d}" for i in range(n)]
    pop.empno_str = [f"{FIRST_EMPNO + i:08d}" for i in range(n)]
    pop.first, pop.last, pop.pref, pop.etype, pop.job = first, last, pref, etype, job
    pop.hire, pop.start, pop.term, pop.lwd, pop.leave = hire, hire.copy(), term, lwd, leave
    pop.username = [pop.new_login(f, l) for f, l in zip(first.tolist(), last.tolist())]
    return pop
