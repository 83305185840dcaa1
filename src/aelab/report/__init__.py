"""Reports: a self-contained HTML builder and the study report."""

from aelab.report.html import Report
from aelab.report.study import build_report, write_report

__all__ = ["Report", "build_report", "write_report"]
