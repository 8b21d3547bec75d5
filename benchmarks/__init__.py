"""pathprune benchmark suites (``python -m benchmarks.<suite>``); each writes its ``results_<suite>.md``, and
``python -m benchmarks.collect_results`` assembles RESULTS.md. Trainers, data generators and the test
oracle live in :mod:`benchmarks.fixtures`."""
