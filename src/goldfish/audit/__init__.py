"""Memorization audit: extraction (prefix -> greedy/beam suffix) and membership inference."""

from goldfish.audit.metrics import (
    extraction_metrics,
    longest_run,
    mia_scores,
    roc_summary,
    rouge_l,
    rouge_l_f,
)
from goldfish.audit.runner import AuditConfig, run_audit

__all__ = ["AuditConfig", "extraction_metrics", "longest_run", "mia_scores", "roc_summary", "rouge_l", "rouge_l_f", "run_audit"]
