"""The end-of-run log scan (tests/support/log_scan.py) catches what it is there to catch."""

from __future__ import annotations

import json

from tests.support.biometrics import EMBEDDING, THUMBNAIL
from tests.support.log_scan import findings


def test_the_log_scan_flags_a_thumbnail_an_embedding_a_dumped_person_and_an_age() -> None:
    lines = [
        json.dumps({"event": "webhook.stored", "job_id": "j", "rows": 12}),
        json.dumps({"event": "debug.value", "value": THUMBNAIL}),
        json.dumps({"event": "debug.vector", "first": EMBEDDING[0]}),
        json.dumps({"event": "debug.body", "body": {"person_ids": [{"age": 41}]}}),
        json.dumps({"event": "person", "gender": "female"}),
        json.dumps({"event": "webhook.rejected", "path": "$.result.person_ids[0].age"}),
    ]
    assert findings(lines) == lines[1:5]
