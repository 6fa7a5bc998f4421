"""Tools for development and demos, not used by the service itself: an upstream simulator
(:mod:`.upstream`, ``results-receiver dev upstream``) and sample media (:mod:`.media`)."""
