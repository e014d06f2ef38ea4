"""Run-time settings from the environment (tunables) — secrets never live here, only in connections."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MAPPING = Path(__file__).resolve().parent / "mappings" / "synthetic_hr.yaml"
DEFAULT_RULES = Path(__file__).resolve().parent / "rules" / "learning_rules.yaml"


def env_float(name: str, default: float) -> float:
    """A numeric setting from the environment (blank = default); a clear error names the variable."""
    raw = (os.environ.get(name) or "").strip()
    try:
        return float(raw) if raw else default
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} is not a number") from None


@dataclass(frozen=True)
class Settings:
    mapping: Path
    source: str                 # file | http
    landing_dir: Path
    reports_dir: Path
    max_drop_share: float       # batch check: fewer rows than the previous snapshot by more than this
    max_quarantine_share: float  # batch check: more rows failing row checks than this
    lms_concurrency: int
    lms_batch_size: int
    apply_shards: int           # parallel apply tasks per plan (DAG dynamic task mapping, pool hrlms_lms)
    learning_rules: Path        # assignment rules file (hrlms.learning.rules)
    export_dir: Path            # CSV enrolment exports
    xapi_page_size: int         # statements asked for per LRS page (the LRS may cap it)

    @classmethod
    def from_env(cls) -> Settings:
        source = os.environ.get("HRLMS_SOURCE", "file").lower()
        if source not in ("file", "http"):
            raise ValueError(f"HRLMS_SOURCE must be 'file' or 'http', not {source!r}")
        reports_dir = Path(os.environ.get("HRLMS_REPORTS_DIR") or REPO_ROOT / ".local" / "reports")
        return cls(
            mapping=Path(os.environ.get("HRLMS_MAPPING") or DEFAULT_MAPPING),
            source=source,
            landing_dir=Path(os.environ.get("HRLMS_LANDING_DIR") or REPO_ROOT / ".local" / "landing"),
            reports_dir=reports_dir,
            max_drop_share=env_float("HRLMS_MAX_DROP_SHARE", 0.2),
            max_quarantine_share=env_float("HRLMS_MAX_QUARANTINE_SHARE", 0.2),
            lms_concurrency=int(env_float("HRLMS_LMS_CONCURRENCY", 4)),
            lms_batch_size=int(env_float("HRLMS_LMS_BATCH_SIZE", 500)),
            apply_shards=max(1, int(env_float("HRLMS_APPLY_SHARDS", 2))),
            learning_rules=Path(os.environ.get("HRLMS_LEARNING_RULES") or DEFAULT_RULES),
            export_dir=Path(os.environ.get("HRLMS_EXPORT_DIR") or reports_dir / "exports"),
            xapi_page_size=int(env_float("HRLMS_XAPI_PAGE_SIZE", 1000)),
        )
