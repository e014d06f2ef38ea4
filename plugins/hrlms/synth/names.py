"""Name pools per Faker locale, built once per seed.

Calling Faker per row is far too slow for 1M workers, so each locale gets a pool of a few
hundred distinct first and last names; workers store indexes into one global pool and the
login slug of every pool entry is precomputed.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

import numpy as np
from faker import Faker

from .reference import LOCATIONS, ROMANIZED_DISPLAY

POOL_SIZE = 300
_NON_ALPHA = re.compile(r"[^a-z]+")


def slugify(text: str) -> str:
    """ASCII lowercase letters only (logins must be ASCII): 'Jürgen-Groß' -> 'jurgengross'."""
    text = text.replace("ß", "ss").replace("ø", "o").replace("Ø", "O").replace("æ", "ae").replace("Æ", "Ae")
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return _NON_ALPHA.sub("", ascii_text.lower())


@dataclass
class NamePools:
    """Global first/last name pools; per-locale index ranges so a worker's names match their country."""

    first: list[str]
    first_slug: list[str]
    last: list[str]
    last_slug: list[str]
    first_range: dict[str, tuple[int, int]]
    last_range: dict[str, tuple[int, int]]

    def draw_first(self, rng: np.random.Generator, locale: str, size: int) -> np.ndarray:
        lo, hi = self.first_range[locale]
        return rng.integers(lo, hi, size=size)

    def draw_last(self, rng: np.random.Generator, locale: str, size: int) -> np.ndarray:
        lo, hi = self.last_range[locale]
        return rng.integers(lo, hi, size=size)


def _distinct(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    seen: dict[str, tuple[str, str]] = {}
    for display, roman in pairs:
        display = display.strip()
        if display and slugify(roman) and display not in seen:
            seen[display] = (display, roman)
    return list(seen.values())


def _locale_names(locale: str, seed: int) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    fake = Faker(locale)
    fake.seed_instance(seed)
    firsts: list[tuple[str, str]] = []
    lasts: list[tuple[str, str]] = []
    for _ in range(POOL_SIZE * 3):
        if locale == "ja_JP":
            f, l = fake.first_name_pair(), fake.last_name_pair()
            firsts.append((f[0], f[2]))
            lasts.append((l[0], l[2]))
        elif locale in ROMANIZED_DISPLAY:
            f, l = fake.first_romanized_name(), fake.last_romanized_name()
            firsts.append((f, f))
            lasts.append((l, l))
        else:
            f, l = fake.first_name(), fake.last_name()
            firsts.append((f, f))
            lasts.append((l, l))
    return _distinct(firsts)[:POOL_SIZE], _distinct(lasts)[:POOL_SIZE]


def build_pools(seed: int) -> NamePools:
    """One pool per locale used by LOCATIONS, in a fixed locale order (determinism)."""
    locales = list(dict.fromkeys(loc.locale for loc in LOCATIONS))
    pools = NamePools([], [], [], [], {}, {})
    for i, locale in enumerate(locales):
        firsts, lasts = _locale_names(locale, seed * 1000 + i)
        pools.first_range[locale] = (len(pools.first), len(pools.first) + len(firsts))
        pools.last_range[locale] = (len(pools.last), len(pools.last) + len(lasts))
        pools.first += [d for d, _ in firsts]
        pools.first_slug += [slugify(r) for _, r in firsts]
        pools.last += [d for d, _ in lasts]
        pools.last_slug += [slugify(r) for _, r in lasts]
    return pools
