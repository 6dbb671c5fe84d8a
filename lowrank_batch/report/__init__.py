"""The archive quality report: numbers from the archive, figures, a self-contained HTML page."""

from .build import build_report

__all__ = ["build_report"]
