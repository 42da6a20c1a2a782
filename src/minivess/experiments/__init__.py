"""Experiments as distributions: multi-seed/multi-fold runs and paired comparisons.

- :mod:`minivess.experiments.multirun`: :func:`run_experiment` trains one config over seeds and
  folds as an MLflow parent run with one child per job, and aggregates their metrics.
- :mod:`minivess.experiments.compare`: per-metric means with bootstrap intervals over volumes
  and seeds, and paired Wilcoxon tests with rank-biserial effect sizes between configurations.
- :mod:`minivess.experiments.report`: the comparison as Markdown/HTML with a figure, logged to
  MLflow.

See ``docs/training.md`` (experiments) and ``docs/evaluation.md`` (comparing).
"""
