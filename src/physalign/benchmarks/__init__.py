"""The papers' benchmarks: prompt suites read from their own files (:mod:`suites`), resumable sampling of a
suite (:mod:`generate`), judge scoring as each benchmark scores (:mod:`scoring`) and light metrics that need no
large model (:mod:`light`: Physics-IQ motion masks, VBench's flicker, dynamic degree and a smoothness
stand-in)."""
