"""Experiments: the paper's protocol run end to end with the project's tools (issue 8).

`python -m experiments.run` plans and runs the steps (resumable), `experiments.report`
writes docs/results.md from the saved runs. See docs/experiments.md.
"""
