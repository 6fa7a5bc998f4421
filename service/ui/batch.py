"""An image batch's page: a grid of its items, a page of :data:`PER_PAGE` at a time, each with
its tags (critical ones marked), persons (thumbnails where stored and readable) and OCR texts,
and its own failure when it failed alone. Read with the query API's functions."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from service import queries
from service.privacy.keys import Keyring
from service.ui import thumbnails

Json = dict[str, Any]

PER_PAGE = 24
ROWS = 2000
"""Rows of each entity read for one page of items (a note says when there were more)."""


@dataclass(slots=True)
class BatchView:
    items: list[Json]
    first: int
    previous: int | None
    next: int | None
    truncated: list[str] = field(default_factory=list)
    thumbnails: thumbnails.Readability = field(default_factory=thumbnails.Readability)


def page_start(item: int | None) -> int:
    return 0 if item is None or item < 0 else item - item % PER_PAGE


def read(conn: sa.Connection, pk: int, keyring: Keyring | None, first: int) -> BatchView:
    """The page of items starting at item ``first``, in the caller's read."""
    items = queries.job_items(conn, pk, [first - 1] if first > 0 else None, PER_PAGE)
    indexes = {item["item_index"] for item in items.rows}
    last = max(indexes, default=first)
    start = [first, -1]
    tags = queries.job_tags(conn, pk, start, ROWS)
    ocr = queries.job_ocr(conn, pk, start, ROWS)
    persons = queries.job_person_appearances(conn, pk, start, ROWS)
    by_item: dict[int, Json] = {}
    for item in items.rows:
        item.update(tags=[], ocr_texts=[], persons=[])
        by_item[item["item_index"]] = item
    truncated = []
    for name, key, page in (("tags", "tags", tags), ("OCR texts", "ocr_texts", ocr),
                            ("persons", "persons", persons)):
        for row in page.rows:
            found = by_item.get(row["item_index"])
            if found is not None:
                found[key].append(row)
        if page.next_position is not None and page.next_position[0] <= last:
            truncated.append(name)
    return BatchView(
        items.rows, first, first - PER_PAGE if first > 0 else None,
        last + 1 if items.next_position is not None else None, truncated,
        thumbnails.readability(conn, pk, keyring, persons.rows))
