"""The identity matcher: every way a term can be written into a document is found and masked,
and what is not the petitioner's is left alone."""
from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from services.notify.confidentiality import MASK, IdentityMatcher, find_identity, scrub

ID_NUMBER = "33010619900101123X"
PHONE = "+86 138-0000-0001"
TERMS = ("西湖区转塘街道某村12号", ID_NUMBER, PHONE, "Zhang San", "张三丰")


def test_words_are_found_in_any_case_and_masked_once_where_they_overlap():
    text = "来信人ZHANG san，住西湖区转塘街道某村12号，张三丰"
    assert scrub(text, TERMS) == f"来信人{MASK}，住{MASK}，{MASK}"
    # "张三" inside "张三丰": one mask for the longer, not two
    assert scrub("张三丰说", ("张三", "张三丰")) == f"{MASK}说"


def test_numbers_are_found_whatever_spaces_or_hyphens_split_them():
    for written in ("33010619900101123x", "330106 19900101 123X", "3301-0619-9001-0112-3X",
                    "3 3 0 1 0 6 1 9 9 0 0 1 0 1 1 2 3 X", "330106 -\t19900101\n123X"):
        assert scrub(f"身份证{written}。", TERMS) == f"身份证{MASK}。", written
    assert scrub("电话+86 138 0000 0001，", TERMS) == f"电话{MASK}，"
    assert scrub("电话 +8613800000001", TERMS) == f"电话 {MASK}"


def test_the_digits_of_a_number_are_found_without_its_other_character():
    # an identity number without its check character, a phone number without its "+"
    assert scrub("身份证号330106 1990 0101 123。", TERMS) == f"身份证号{MASK}。"
    assert scrub("电话86-138-0000-0001", TERMS) == f"电话{MASK}"
    assert find_identity("3301061990010112", TERMS) == []  # fewer digits are another number


def test_the_text_around_a_split_number_is_kept_as_written():
    text = "前文 a-b  138 - 0000 - 0001 后文 c d"
    assert scrub(text, ("13800000001",)) == f"前文 a-b  {MASK} 后文 c d"


def test_other_numbers_and_other_separators_are_left_alone():
    text = "案件 330106-2026-000042，2026年10月13日，138/0000/0001，138.0000.0001"
    assert scrub(text, TERMS) == text
    assert find_identity(text, TERMS) == []


def test_no_terms_no_change():
    assert scrub({"a": ["张三丰"]}, ()) == {"a": ["张三丰"]}
    assert find_identity("张三丰", ()) == []


def test_nested_values_are_scrubbed():
    value = {"content": "张三丰来信", "requests": ["联系 +86 138 0000 0001"], "n": 3,
             "parts": ({"who": "zhang san"},)}
    assert scrub(value, TERMS) == {"content": f"{MASK}来信", "requests": [f"联系 {MASK}"],
                                   "n": 3, "parts": ({"who": MASK},)}


def _old_term_pattern(terms: tuple[str, ...]) -> re.Pattern[str]:
    """The compiled alternation the matcher replaced: what it found must still be found."""
    def source(term: str) -> str:
        digits = re.sub(r"\D", "", term)
        if len(digits) >= 5 and len(digits) >= len(term.replace(" ", "").replace("-", "")) - 1:
            return r"[\s\-]?".join(re.escape(c) for c in term if not c.isspace() and c != "-")
        return re.escape(term)
    return re.compile("|".join(source(t) for t in terms), re.IGNORECASE)


_filler = st.text(alphabet="信访人 来电-反映abcXYZ0123456789，。\n", max_size=40)
_separator = st.sampled_from(["", "", " ", "-", "\t"])


@st.composite
def _text_with_terms(draw):
    parts = []
    for _ in range(draw(st.integers(0, 4))):
        parts.append(draw(_filler))
        term = draw(st.sampled_from(TERMS))
        if re.sub(r"\D", "", term):  # write a number with separators of the writer's choosing
            term = "".join(c + draw(_separator) for c in term.replace(" ", "").replace("-", ""))
        parts.append(draw(st.sampled_from([term, term.upper(), term.lower()])))
    parts.append(draw(_filler))
    return "".join(parts)


@settings(max_examples=300, deadline=None)
@given(_text_with_terms())
def test_everything_the_compiled_pattern_found_is_masked(text):
    old = _old_term_pattern(TERMS)
    assert not old.search(scrub(text, TERMS))
    if old.search(text):
        assert find_identity(text, TERMS)
    # nothing but terms (or the digits of a number) is masked: each masked stretch begins
    # and ends with one
    digits = [re.sub(r"\D", "", t) for t in TERMS]
    packed_terms = [_packed(t) for t in TERMS] + [d for d in digits if len(d) >= 7]
    for start, end in IdentityMatcher(TERMS).spans(text):
        piece = _packed(text[start:end])
        assert any(piece.startswith(t) for t in packed_terms), text[start:end]
        assert any(piece.endswith(t) for t in packed_terms), text[start:end]


def _packed(text: str) -> str:
    return re.sub(r"[\s\-]+", "", text).lower()


def test_packing_removes_exactly_what_the_separator_pattern_matches():
    from services.notify.confidentiality import _NUMBER_SEPARATORS, _packed
    differ = [hex(cp) for cp in range(0x110000)
              if (_packed(chr(cp)) == "") != bool(_NUMBER_SEPARATORS.fullmatch(chr(cp)))]
    assert differ == []
