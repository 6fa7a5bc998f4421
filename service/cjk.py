"""CJK text as search terms: overlapping bigrams, since CJK writing puts no spaces between words.

The word tokenizers of both databases see a run such as ``禁止遛狗`` as one word, so a word of
one or two characters inside it cannot be found as a word. :func:`search_terms` gives, for a
text that contains CJK, the extra terms stored next to it (``ocr_texts.search_terms``, indexed
with the text): every overlapping pair of characters of each CJK run, the run's last character
alone, and the letters or digits glued to a run (``USB`` in ``USB充電器``) as words of their own.
:func:`query_terms` splits a search the same way, so both sides always agree:

* one CJK character matches as a prefix: every character of a run starts a pair or is its
  last character;
* two or more CJK characters become their pairs, which must all appear;
* any other word is a word prefix, as before.

CJK here is Han (unified ideographs, extension A, the supplementary and tertiary ideographic
planes with extensions B to H, compatibility ideographs and iteration marks), Hiragana,
Katakana (with the phonetic extensions, halfwidth forms and kana supplements) and Hangul
(syllables and jamo, with their compatibility and halfwidth forms). Punctuation such as
``。``, ``、`` or ``・`` separates runs. Runs are NFKC-normalized, so that halfwidth katakana
and compatibility ideographs match their usual forms; text without CJK gets no terms at all.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator

_CJK = (
    # Han
    "\u3005-\u3007"  # iteration mark, closing mark, ideographic number zero
    "\u3400-\u4dbf"  # CJK Unified Ideographs Extension A
    "\u4e00-\u9fff"  # CJK Unified Ideographs
    "\uf900-\ufaff"  # CJK Compatibility Ideographs
    "\U00020000-\U0003ffff"  # extensions B-I, Compatibility Ideographs Supplement (SIP, TIP)
    # Hiragana (with the combining voiced sound marks; not the spacing ゛ ゜)
    "\u3041-\u3096\u3099\u309a\u309d-\u309f"
    # Katakana, less U+30A0 (a double hyphen) and U+30FB (a middle dot, a separator)
    "\u30a1-\u30fa\u30fc-\u30ff"
    "\u31f0-\u31ff"  # Katakana Phonetic Extensions
    "\uff66-\uff9f"  # Halfwidth Katakana
    "\U0001b000-\U0001b16f"  # Kana Supplement, Kana Extended-A, Small Kana Extension
    # Hangul
    "\u1100-\u11ff"  # Hangul Jamo
    "\u3131-\u318e"  # Hangul Compatibility Jamo
    "\ua960-\ua97f"  # Hangul Jamo Extended-A
    "\uac00-\ud7a3"  # Hangul Syllables
    "\ud7b0-\ud7ff"  # Hangul Jamo Extended-B
    "\uffa0-\uffdc"  # Halfwidth Hangul
)
_TOKEN = re.compile(rf"(?:\w|[{_CJK}])+")
_PIECE = re.compile(rf"([{_CJK}]+)|[^{_CJK}]+")
_RUN = re.compile(rf"[{_CJK}]+")
# At most about 400 kB in a tsvector (4 bytes per character, 9 more per term), leaving room
# for the text's own words under PostgreSQL's 1 MB limit.
_MAX_TERMS = 20_000
_MAX_TERM_CHARS = 60_000


def _pieces(text: str) -> Iterator[tuple[str, bool, bool]]:
    """(piece, is a CJK run, is glued to a CJK run) for every word of ``text``, split where
    CJK and other letters meet."""
    for token in _TOKEN.findall(text):
        for match in _PIECE.finditer(token):
            if match.group(1) is None:
                yield match.group(), False, len(match.group()) < len(token)
                continue
            for run in _RUN.findall(unicodedata.normalize("NFKC", match.group(1))):
                yield run, True, False


def _pairs(run: str) -> Iterator[str]:
    return (run[i:i + 2] for i in range(len(run) - 1))


def _text_terms(text: str) -> Iterator[str]:
    for piece, is_cjk, glued in _pieces(text):
        if is_cjk:
            yield from _pairs(piece)
            yield piece[-1]
        elif glued:
            yield piece


def search_terms(text: str | None) -> str | None:
    """The terms stored with ``text`` (space-separated, each once), or None when it has no
    CJK. A very long text keeps the terms of its beginning, up to ``_MAX_TERMS`` terms and
    ``_MAX_TERM_CHARS`` characters: PostgreSQL refuses a tsvector of 1 MB or more (the rest
    is still found by substring, from three characters)."""
    if not text or text.isascii() or _RUN.search(text) is None:
        return None
    terms: dict[str, None] = {}  # an ordered set
    size = 0
    for term in _text_terms(text):
        if len(terms) == _MAX_TERMS:
            break
        if term in terms or size + len(term) + 1 > _MAX_TERM_CHARS:
            continue
        size += len(term) + 1
        terms[term] = None
    return " ".join(terms) or None


def query_terms(q: str) -> list[tuple[str, bool]]:
    """``q`` as (term, is a prefix) pairs that a matching text's words and terms all contain;
    no duplicates, in order."""
    terms: dict[tuple[str, bool], None] = {}
    for piece, is_cjk, _glued in _pieces(q):
        if not is_cjk or len(piece) == 1:
            terms[piece, True] = None
        else:
            terms.update(dict.fromkeys((pair, False) for pair in _pairs(piece)))
    return list(terms)
