"""Reports: the paper's tables and figures rendered from the runs in MLflow, beside the paper's numbers.

`harness.cli.report.report` is the `shapeprop-bench report` command; `harness.report.build`
holds `table_report` / `figure_report` for use from Python.
"""
