"""Reliability scenarios: SIGKILLed service, database outage, conflicting results, disk failures.

Every scenario runs in the normal test suite at a small scale (``RECEIVER_RELIABILITY_SCALE``
unset or ``fast``); ``scripts/reliability`` runs them at ``long`` scale and renders
``docs/RELIABILITY.md`` from the outcomes each scenario measured (see ``results.py``).
"""
