"""Content fingerprints: the fast NFKC gives exactly what the normaliser gives, so a
fingerprint never changes with the way it is computed."""
from __future__ import annotations

import unicodedata

from hypothesis import example, given, settings
from hypothesis import strategies as st

from petitions.domain.matching import _NFKC_FORMS, content_fingerprint, nfkc

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
