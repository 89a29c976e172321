"""driftrec's ML side: the recommendation engine, free of any Kafka import.

The same objects run inside Faust agents (``streams/``), in the embedded
runner, in the evaluator and in the benchmarks.
"""
