"""Reports: a self-contained HTML builder and the study report."""

from aelab.report.html import Report

__all__ = ["Report"]
