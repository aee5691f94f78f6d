"""Content fingerprints: the fast NFKC gives exactly what the normaliser gives, so a
fingerprint never changes with the way it is computed."""
from __future__ import annotations

import unicodedata

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from petitions.domain.matching import _NFKC_FORMS, RecentFingerprints, content_fingerprint, nfkc

# Characters NFKC treats specially around others: combining marks (reordered, composed with
# the base before them, the long solidus with < = >), kana voiced marks (half-width ones
# compose with the kana before them), conjoining Hangul jamo, Greek capitals (lower-casing
# a final sigma looks at what follows it).
INTERACTING = ("\u0301\u0308\u0323\u0338\u0345\u3099\u309a\uff9e\uff9f\u1100\u1161\u11a8"
               "\u03a3\u0391e<=>ｶｷ가")
ALPHABET = st.sampled_from(sorted(_NFKC_FORMS) + list(INTERACTING)
                           + list("村里宅基地，。！？（）〔〕、“”…　 aZ09_-"))


def test_each_character_with_a_form_next_to_any_other_normalises_as_the_whole_text():
    neighbours = sorted(_NFKC_FORMS) + list(INTERACTING) + ["a", "村"]
    for first in sorted(_NFKC_FORMS):
        for second in neighbours:
            for text in (first + second, second + first):
                assert nfkc(text) == unicodedata.normalize("NFKC", text), ascii(text)


@settings(max_examples=400)
@given(st.text(ALPHABET, max_size=40) | st.text(max_size=40))
@example("ΑΣ，Α")  # a final sigma is decided by what follows it
@example("ｶﾞｷﾟ＜\u0338")  # half-width kana with voiced marks; a solidus over a full-width <
def test_nfkc_is_the_normalisers(text):
    assert nfkc(text) == unicodedata.normalize("NFKC", text)


def test_width_case_spaces_and_punctuation_do_not_change_a_fingerprint():
    one = content_fingerprint("330106", "appeal", "宅基地纠纷，请求重新丈量（ABC 123）。")
    assert one == content_fingerprint("330106", "appeal", "宅基地纠纷,请求重新丈量(abc123).")
    assert one == content_fingerprint("330106", "appeal", "宅基地纠纷　请求重新丈量ＡＢＣ１２３")
    assert one != content_fingerprint("330106", "appeal", "宅基地纠纷，请求重新登记（ABC 123）。")
    assert one != content_fingerprint("330108", "appeal", "宅基地纠纷，请求重新丈量（ABC 123）。")


def test_a_content_fingerprinted_again_is_looked_up_not_normalised_again(monkeypatch):
    from petitions.domain import matching

    content = "宅基地纠纷，请求重新丈量。" * 100
    first = content_fingerprint("330106", "appeal", content)
    monkeypatch.setattr(matching, "nfkc", lambda text: pytest.fail("normalised again"))
    assert content_fingerprint("330106", "appeal", "".join(list(content))) == first


def test_recent_fingerprints_keep_within_their_entries_and_characters():
    recent = RecentFingerprints(max_entries=3, budget_chars=10)
    for i, text in enumerate(["aaaa", "bbbb", "cc"]):
        recent.put(("d", "c", text), str(i))
    assert [recent.get(("d", "c", t)) for t in ("aaaa", "bbbb", "cc")] == ["0", "1", "2"]
    recent.put(("d", "c", "eeee"), "3")  # 14 characters: the oldest goes
    assert recent.get(("d", "c", "aaaa")) is None and recent.get(("d", "c", "eeee")) == "3"
    recent.put(("d", "c", "f"), "4")  # a fourth entry: the next oldest goes
    assert recent.get(("d", "c", "bbbb")) is None
    assert [recent.get(("d", "c", t)) for t in ("cc", "eeee", "f")] == ["2", "3", "4"]
    recent.put(("d", "c", "x" * 11), "5")  # longer than the whole budget: not kept
    assert recent.get(("d", "c", "x" * 11)) is None and recent.get(("d", "c", "f")) == "4"
