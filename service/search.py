"""OCR full-text search across all jobs, on PostgreSQL and on SQLite.

``q`` is plain user text, never query syntax: it is split into words here and each word is
quoted before it reaches the database's query language, so ``off-leash``, ``dogs:``, quotes,
``*``, parentheses or CJK text can never be a syntax error. A row matches when it contains
every word (as a word or a word prefix) or, for three characters or more, contains ``q`` as
a substring (trigram indexes). CJK runs, which the word tokenizers do not split, are searched
as the overlapping character pairs stored with the text (:mod:`service.cjk`): every pair of
the query must appear, and a single character is a prefix of a pair or a run's last character.
Word matches that are also exact substrings rank first, then other word matches, then
substring-only matches.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from service import cjk

_MAX_TERMS = 32
_CUSTOM_PLAN = sa.text("SET LOCAL plan_cache_mode = force_custom_plan")
_MIN_SUBSTRING = 3

_COLUMNS = """
    o.item_index, o.ocr_index, o.language_code, o.full_text, o.start_seconds, o.end_seconds,
    j.job_id, m.external_id
"""
_OCR_COLUMNS = """
    o.item_index, o.ocr_index, o.language_code, o.full_text, o.start_seconds, o.end_seconds
"""
_PAGE_COLUMNS = """
    page.item_index, page.ocr_index, page.language_code, page.full_text, page.start_seconds,
    page.end_seconds
"""
_JOINS = """
    JOIN jobs j ON j.id = o.job_pk
    JOIN media_items m ON m.job_pk = o.job_pk AND m.item_index = o.item_index
"""


def terms(q: str) -> list[tuple[str, bool]]:
    """The words of ``q`` (CJK runs as character pairs), each with whether it is a prefix."""
    return cjk.query_terms(q.lower())[:_MAX_TERMS]


def _like_pattern(q: str) -> str:
    escaped = q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _postgres(q: str, language: str | None) -> tuple[str, dict[str, Any]] | None:
    query_terms = terms(q)
    use_words = bool(query_terms)
    use_substring = len(q) >= _MIN_SUBSTRING
    if not (use_words or use_substring):
        return None
    tsquery = " & ".join(f"'{t}'{':*' if prefix else ''}" for t, prefix in query_terms)
    matches = []
    if use_words:
        matches.append("o.search_vector @@ to_tsquery('simple', :tsquery)")
    if use_substring:
        matches.append("o.full_text ILIKE :pattern")
    rank_words = "ts_rank(o.search_vector, to_tsquery('simple', :tsquery))" if use_words else "0"
    rank_substring = "CASE WHEN o.full_text ILIKE :pattern THEN 0.01 ELSE 0 END" if (
        use_substring) else "0"
    # A word match that is also an exact substring comes first: CJK character pairs can all
    # appear in a text without being side by side.
    exact = " AND ".join(matches) if len(matches) == 2 else "false"
    language_filter = "AND o.language_code = :language" if language is not None else ""
    # Only constant fragments are joined here; every user value is a bound parameter. The page
    # is ranked and cut inside ocr_texts, carrying the columns it returns (so ocr_texts is not
    # read a second time); only its rows are joined to their job and item.
    sql = f"""
        SELECT {_PAGE_COLUMNS}, j.job_id, m.external_id, page.rank
        FROM (
            SELECT o.id, o.job_pk, {_OCR_COLUMNS}, ({rank_words} + {rank_substring}) AS rank,
                ({exact}) AS exact
            FROM ocr_texts o
            WHERE ({' OR '.join(matches)}) {language_filter}
            ORDER BY exact DESC, rank DESC, o.id DESC
            LIMIT :limit OFFSET :offset
        ) page
        JOIN jobs j ON j.id = page.job_pk
        JOIN media_items m ON m.job_pk = page.job_pk AND m.item_index = page.item_index
        ORDER BY page.exact DESC, page.rank DESC, page.id DESC
    """  # noqa: S608
    return sql, {"tsquery": tsquery, "pattern": _like_pattern(q), "language": language}


def _sqlite(q: str, language: str | None) -> tuple[str, dict[str, Any]] | None:
    query_terms = terms(q)
    use_substring = len(q) >= _MIN_SUBSTRING
    hits = []
    if query_terms:
        hits.append("SELECT rowid AS id, bm25(ocr_words) AS score FROM ocr_words "
                    "WHERE ocr_words MATCH :words")
    if use_substring:
        hits.append("SELECT rowid AS id, 0.0 AS score FROM ocr_trigrams "
                    "WHERE ocr_trigrams MATCH :phrase")
    if not hits:
        return None
    language_filter = "AND o.language_code = :language" if language is not None else ""
    # A row found by both (a word match that is also an exact substring) comes first.
    sql = f"""
        WITH hits AS MATERIALIZED ({' UNION ALL '.join(hits)}),
             page AS MATERIALIZED (
                SELECT o.id, min(hits.score) AS score, count(*) AS found_by
                FROM hits JOIN ocr_texts o ON o.id = hits.id
                WHERE 1 = 1 {language_filter}
                GROUP BY o.id
                ORDER BY found_by DESC, score, o.id DESC
                LIMIT :limit OFFSET :offset)
        SELECT {_COLUMNS}, -page.score AS rank
        FROM page JOIN ocr_texts o ON o.id = page.id {_JOINS}
        ORDER BY page.found_by DESC, page.score, o.id DESC
    """  # noqa: S608
    return sql, {
        "words": " AND ".join(f'"{t}"{"*" if prefix else ""}' for t, prefix in query_terms),
        "phrase": '"' + q.replace('"', '""') + '"',
        "language": language,
    }


def search_ocr(conn: sa.Connection, q: str, *, language_code: str | None,
               limit: int, offset: int) -> tuple[list[dict[str, Any]], bool]:
    """One page of hits in relevance order, and whether more follow."""
    build = _postgres if conn.dialect.name == "postgresql" else _sqlite
    statement = build(q, language_code)
    if statement is None:
        return [], False
    sql, params = statement
    if conn.dialect.name == "postgresql":
        # A prepared statement's generic plan does not know the words: it estimates
        # thousands of matches and plans for them (9 ms at 100,000 jobs where the plan for
        # the actual words takes 1 ms). Plan each search for its own words.
        conn.execute(_CUSTOM_PLAN)
    rows = list(conn.execute(sa.text(sql), {**params, "limit": limit + 1,
                                                  "offset": offset}))
    hits = [{
        "job_id": r.job_id, "item_index": r.item_index, "external_id": r.external_id,
        "index": r.ocr_index, "language_code": r.language_code, "full_text": r.full_text,
        "start_seconds": r.start_seconds, "end_seconds": r.end_seconds,
        "rank": float(r.rank),
    } for r in rows[:limit]]
    return hits, len(rows) > limit
