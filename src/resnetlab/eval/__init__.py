"""Evaluation: the metrics accumulator (shared with training), plots and the HTML report.

Only the metrics are imported here; `plots` and `report` pull in matplotlib and are imported on use.
"""

from resnetlab.eval.metrics import Metrics, classification_report, format_metrics

__all__ = ["Metrics", "classification_report", "format_metrics"]
