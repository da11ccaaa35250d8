"""Evaluation and the report over runs, on one metric registry.

- :mod:`~dancelcm.evaluation.metrics`: the registry (every metric's headers, titles, direction, rounding);
- :mod:`~dancelcm.evaluation.runner`: the evaluation loop, the samplers a config asks for, the reference cache;
- :mod:`~dancelcm.evaluation.tables` / :mod:`~dancelcm.evaluation.plots`: markdown tables, files and plots;
- :mod:`~dancelcm.evaluation.runs` / :mod:`~dancelcm.evaluation.deltas`: run folders, seed groups, paired
  differences; :mod:`~dancelcm.evaluation.study`: the report that puts them together.

``python -m dancelcm.evaluate`` and ``python -m dancelcm.report`` are the commands.
"""
