"""Org tree: root company -> divisions -> departments -> [groups] -> teams (depth 3 to 5).

The tree is sized from the headcount so spans of control stay realistic (~10 per team) at
1k and at 1M workers; large departments get an extra group level, which gives depth 5.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .reference import COMPANY_NAME, DEPARTMENTS, LOCATIONS

TEAM_SIZE = 10
TEAMS_PER_GROUP = 8
UNIT_TYPES = ("COMPANY", "DIVISION", "DEPARTMENT", "GROUP", "TEAM")


@dataclass
class OrgTree:
    """Columnar org units. Index 0 is the root; codes are immutable, parent/name can change (reorg)."""

    codes: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)   # last name segment, reused when renaming
    parent: list[int] = field(default_factory=list)   # -1 for the root
    depth: list[int] = field(default_factory=list)    # root = 1
    utype: list[str] = field(default_factory=list)
    dept: list[int] = field(default_factory=list)     # index into DEPARTMENTS, -1 for the root
    loc: list[int] = field(default_factory=list)      # home location of the unit
    capacity: list[int] = field(default_factory=list)  # planned headcount of leaf units
    is_leaf: list[bool] = field(default_factory=list)

    def add(self, name: str, label: str, parent: int, utype: str, dept: int, loc: int) -> int:
        self.codes.append("")
        self.names.append(name)
        self.labels.append(label)
        self.parent.append(parent)
        self.depth.append(1 if parent < 0 else self.depth[parent] + 1)
        self.utype.append(utype)
        self.dept.append(dept)
        self.loc.append(loc)
        self.capacity.append(0)
        self.is_leaf.append(True)
        if parent >= 0:
            self.is_leaf[parent] = False
        return len(self.codes) - 1

    def __len__(self) -> int:
        return len(self.codes)

    def assign_codes(self) -> None:
        """ORG0001.. in creation order; width grows past 9999 units (1M workers -> ORG00001)."""
        width = max(4, len(str(len(self.codes))))
        self.codes = [f"ORG{i + 1:0{width}d}" for i in range(len(self.codes))]

    def unknown_code(self, k: int) -> str:
        """A code that can never exist: one digit longer than real codes and starting with 9."""
        width = len(self.codes[0]) - 3
        return f"ORG9{k % 10 ** width:0{width}d}"


def _split(total: int, weights: np.ndarray) -> list[int]:
    """Largest-remainder split of an integer total by weights (deterministic)."""
    raw = weights / weights.sum() * total
    out = np.floor(raw).astype(int)
    rest = total - int(out.sum())
    if rest > 0:
        out[np.argsort(-(raw - out), kind="stable")[:rest]] += 1
    return out.tolist()


_LOC_CUM = np.cumsum([loc.weight for loc in LOCATIONS]) / sum(loc.weight for loc in LOCATIONS)


def _pick_loc(rng: np.random.Generator, parent_loc: int | None) -> int:
    """Units mostly sit where their parent sits; otherwise a location weighted by office size."""
    if parent_loc is not None and rng.random() < 0.7:
        return parent_loc
    return min(int(np.searchsorted(_LOC_CUM, rng.random(), side="right")), len(LOCATIONS) - 1)


def build_org(n_workers: int, rng: np.random.Generator) -> OrgTree:
    """Build a tree whose leaf capacities roughly sum to n_workers."""
    tree = OrgTree()
    root = tree.add(COMPANY_NAME, COMPANY_NAME, -1, "COMPANY", -1, 0)
    n_depts = min(len(DEPARTMENTS), max(3, round(math.sqrt(n_workers) / 2.5)))
    depts = list(range(n_depts))
    dept_sizes = _split(n_workers, np.array([DEPARTMENTS[d].weight for d in depts]))
    for d, dsize in zip(depts, dept_sizes):
        spec = DEPARTMENTS[d]
        du = tree.add(spec.name, spec.name, root, "DIVISION", d, _pick_loc(rng, None))
        n_sub = min(len(spec.subs), max(1, dsize // 80))
        for sub_name, ssize in zip(spec.subs[:n_sub], _split(dsize, rng.uniform(0.5, 1.5, n_sub))):
            su = tree.add(f"{spec.name} / {sub_name}", sub_name, du, "DEPARTMENT", d, _pick_loc(rng, tree.loc[du]))
            n_teams = ssize // TEAM_SIZE
            if n_teams <= 1:
                tree.capacity[su] = max(1, ssize)
                continue
            team_sizes = _split(ssize, rng.uniform(0.6, 1.4, n_teams))
            if n_teams <= 12:
                parents = [su] * n_teams
            else:
                n_groups = math.ceil(n_teams / TEAMS_PER_GROUP)
                groups = [tree.add(f"{tree.names[su]} / Group {g + 1:02d}", f"Group {g + 1:02d}", su, "GROUP",
                                   d, _pick_loc(rng, tree.loc[su])) for g in range(n_groups)]
                parents = [groups[t % n_groups] for t in range(n_teams)]
            counters: dict[int, int] = {}
            for p, tsize in zip(parents, team_sizes):
                counters[p] = counters.get(p, 0) + 1
                label = f"Team {counters[p]:02d}"
                tu = tree.add(f"{tree.names[p]} / {label}", label, p, "TEAM", d, _pick_loc(rng, tree.loc[p]))
                tree.capacity[tu] = max(1, tsize)
    tree.assign_codes()
    return tree
