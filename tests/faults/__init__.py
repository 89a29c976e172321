"""The fault suite: driftrec workers under load from an outside client, broken on purpose.

:mod:`tests.faults.harness` holds the parts (a steady load generator whose every
event has a unique ``event_id``, a ``/healthz`` prober, workers that can be
killed with SIGKILL at a chosen stage of their start-up, a verifier that
accounts for every event); :mod:`tests.faults.scenarios` the scenarios; the
bounded subset runs in ``make test`` (``tests/faults/test_faults.py``), the
whole suite in ``make chaos`` (``python -m tests.faults``), which writes
docs/reliability.md.
"""
