"""Biometric values that test payloads carry and that must never appear in a log line."""

from __future__ import annotations

import base64
import os

EMBEDDING = [0.1234567891, -0.9876543219, 0.5555555551]
THUMBNAIL = base64.b64encode(b"\xff\xd8\xff\xe0 a face thumbnail " + os.urandom(24)).decode()
AGE = 41.5
