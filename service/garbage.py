"""Python's cyclic garbage collector, set for a long-running server process.

Reference counting frees almost everything the service allocates: a delivery's parsed
document, its rows, its sealed values. The cyclic collector only has to find the rare cycles,
yet with Python's defaults (a young collection every 700 new container objects, an old one
every 100 young ones) it kept walking every live object over and over: a typical delivery
(335 KB, tens of thousands of lists and dicts) set off several young collections, each walking
the in-flight deliveries of 32 connections, and each full collection walked the 140,000
objects of the imported modules and the face index's keys. Measured on the 2-core
development machine, SQLite, one worker, typical load, 40 s: 3.5 s in the collector with the
face index on (gen0 1,133 runs / 958 ms, gen1 102 / 960 ms, gen2 9 / 1,580 ms), 2.6 s
with it off: 6-9% of the process's time. With :func:`tune_for_serving`: 0.6 s and 0.5 s.

:func:`tune_for_serving` collects the young generation every :data:`YOUNG_THRESHOLD` new
containers instead (cycles are still found, a few milliseconds later) and moves everything
that exists once the app is built (modules, classes, functions, settings) into the permanent
generation (:func:`gc.freeze`), which no collection walks again. Only ``serve``'s processes
do this (:func:`service.app.app_from_env`); a program that imports the app keeps its own
settings.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 20_000
"""New container objects (net of those freed) between two young collections (default 700)."""
OLDER_THRESHOLDS = (20, 20)
"""Young collections per middle one, middle per old one (defaults 10 and 10)."""


def tune_for_serving() -> None:
    """Set the thresholds above, then freeze every object alive now (call it once the app
    is built)."""
    gc.set_threshold(YOUNG_THRESHOLD, *OLDER_THRESHOLDS)
    gc.collect()
    gc.freeze()
