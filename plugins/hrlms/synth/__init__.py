"""Deterministic synthetic HR exports (daily full snapshots, defects, truth files, HTTP pages)."""
from .changes import Churn
from .generator import DayFiles, SyntheticHR, file_names, generate
from .messiness import DEFECT_KINDS, ROW_ERRORS, Messiness
from .render import ORG_COLUMNS, WORKER_COLUMNS
from .truth import Truth, load_truth

__all__ = ["Churn", "DayFiles", "SyntheticHR", "file_names", "generate", "DEFECT_KINDS", "ROW_ERRORS",
           "Messiness", "ORG_COLUMNS", "WORKER_COLUMNS", "Truth", "load_truth"]
