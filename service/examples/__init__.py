"""The analysis API reference examples, used by ``send-test``."""
