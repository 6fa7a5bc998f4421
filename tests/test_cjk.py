"""The CJK search terms: which characters are CJK, and the terms stored and searched."""

from __future__ import annotations

import pytest

from service.cjk import query_terms, search_terms


@pytest.mark.parametrize("text", [None, "", "No dogs off leash", "Ünïcode café 2026",
                                  "Привет мир", "مرحبا", "😀 ★ ♥", "①②③ ㈱", "。、・「」"])
def test_text_without_cjk_letters_has_no_search_terms(text):
    assert search_terms(text) is None


def test_each_cjk_run_gives_its_overlapping_pairs_and_last_character():
    assert search_terms("禁止遛狗") == "禁止 止遛 遛狗 狗"
    assert search_terms("禁止遛狗。遛一遛") == "禁止 止遛 遛狗 狗 遛一 一遛 遛"
    assert search_terms("犬") == "犬"


@pytest.mark.parametrize(("text", "terms"), [
    ("\u3400\u4dbf", "\u3400\u4dbf \u4dbf"),  # Extension A, first and last
    ("\U00020000\U0002a6d6", "\U00020000\U0002a6d6 \U0002a6d6"),  # Extension B
    ("\U00030000\U00031350", "\U00030000\U00031350 \U00031350"),  # Extensions G and H
    ("\u3005\u3006\u3007", "\u3005\u3006 \u3006\u3007 \u3007"),  # 々 〆 and ideographic zero
    ("ひらがな", "ひら らが がな な"),
    ("カタカナー", "カタ タカ カナ ナー ー"),
    ("ㇰㇱ", "ㇰㇱ ㇱ"),  # Katakana Phonetic Extensions
    ("한국어", "한국 국어 어"),
    ("ㄱㄴ", "ᄀᄂ ᄂ"),  # compatibility jamo, as their NFKC forms
])
def test_han_kana_and_hangul_ranges_are_cjk(text, terms):
    assert search_terms(text) == terms


def test_compatibility_ideographs_and_halfwidth_forms_become_their_usual_forms():
    assert search_terms("\uf900\u4e00") == "\u8c48\u4e00 \u4e00"  # U+F900 is U+8C48
    assert search_terms("\U0002f800") == "\u4e3d"  # Compatibility Ideographs Supplement
    assert search_terms("ﾀﾜｰ") == "タワ ワー ー"
    assert search_terms("ｶﾞｲﾄﾞ") == "ガイ イド ド"
    assert query_terms("ﾀﾜｰ") == query_terms("タワー")


def test_punctuation_and_spaces_separate_runs():
    assert search_terms("東京・大阪") == "東京 京 大阪 阪"
    assert search_terms("東京 大阪") == "東京 京 大阪 阪"
    assert search_terms("「東京」") == "東京 京"


def test_letters_glued_to_cjk_become_words_of_their_own():
    assert search_terms("USB充電器 for iPhone") == "USB 充電 電器 器"
    assert search_terms("2026年") == "2026 年"


def test_query_pairs_are_exact_and_single_characters_and_other_words_prefixes():
    assert query_terms("遛") == [("遛", True)]
    assert query_terms("遛狗") == [("遛狗", False)]
    assert query_terms("禁止遛狗") == [("禁止", False), ("止遛", False), ("遛狗", False)]
    assert query_terms("哈哈哈哈") == [("哈哈", False)]
    assert query_terms("usb充電 off-leash") == [("usb", True), ("充電", False), ("off", True),
                                              ("leash", True)]
    assert query_terms('"*:()\' NEAR') == [("NEAR", True)]


def test_a_very_long_text_keeps_the_terms_of_its_beginning_within_bounds():
    text = "".join(chr(0x4E00 + i) for i in range(20_000)) * 3
    terms = search_terms(text)
    assert terms is not None
    assert terms.startswith("\u4e00\u4e01 \u4e01\u4e02 ")
    assert len(terms) <= 60_000
    assert len(terms.split()) <= 20_000
    assert search_terms("a" * 100_000 + "東") == "東"
