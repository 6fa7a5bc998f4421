"""A fixed master key for tests (never used anywhere else)."""

from __future__ import annotations

import base64

from service.privacy.keys import Keyring, parse_keys

TEST_KEY_LINE = "test-key:" + base64.b64encode(bytes(range(32))).decode("ascii")
TEST_KEYRING: Keyring = parse_keys(TEST_KEY_LINE)
