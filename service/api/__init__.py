"""The query API under ``/v1``."""
