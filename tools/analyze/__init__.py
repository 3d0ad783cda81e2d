"""`dj-analyze`: Data-Juicer's analyzer (stats of every filter, nothing dropped; overall.csv,
histograms, box plots, a correlation heatmap) and a self-contained `report.html` with the
recipe's thresholds, what they drop, suggested thresholds and, for a run, its funnel and
dropped samples.
"""

from __future__ import annotations

from .analyzer import AnalyzeOptions, AnalyzeResult, analyze_recipe, analyzer_options, run_report

__all__ = ["AnalyzeOptions", "AnalyzeResult", "analyze_recipe", "analyzer_options", "run_report"]
