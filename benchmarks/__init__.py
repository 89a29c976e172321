"""driftrec's benchmarks: figures side by side with what users would use instead.

Not tests: each module measures, prints a table and returns its figures as a
JSON-able dict; :mod:`benchmarks.report` turns the saved results into
``docs/benchmarks.md`` and plots. Run them with ``make bench`` or
``python -m benchmarks --help``.
"""
