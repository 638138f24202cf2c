"""Stage 2: training targets from a cache store, and what they did to the labels.

rules      eq. 2, 3, 5, 6 on arrays and the one switch between the modes
write      `lcdata correct`: the corrected store, out of core with dask
stats      per-block statistics: mass added, PAF cells changed, truth recovered
analytics  whole-store totals, the `analytics` attribute and its text
coverage   how much of the missing truth the teacher's outputs cover
"""
