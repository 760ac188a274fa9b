"""Checking and repairing a store (issue 16): verify reads every chunk, repair rewrites bad ones.

``repair`` reruns ingest tasks, so it lives with the pipelines (:func:`chunkstore.pipeline.
repair`); this package holds the checks and the report value objects.
"""

from chunkstore.integrity.report import Problem, RepairSummary, VerifyReport
from chunkstore.integrity.verify import check, verify

__all__ = ["Problem", "RepairSummary", "VerifyReport", "check", "verify"]
