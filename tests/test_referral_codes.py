"""Referral codes (domain/referrals/codes.py): random, of the unambiguous alphabet, read as people type them."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from domain.referrals.codes import ALPHABET, LENGTH, new_referral_code, normal_code


def test_codes_use_the_unambiguous_alphabet_and_do_not_repeat() -> None:
    codes = {new_referral_code() for _ in range(2000)}
    assert len(codes) == 2000
    assert all(len(c) == LENGTH for c in codes)
    assert set("".join(codes)) <= set(ALPHABET)
    assert not set("01ILOU") & set(ALPHABET)


@given(st.text(alphabet=ALPHABET, min_size=LENGTH, max_size=LENGTH), st.data())
def test_a_code_typed_with_dashes_spaces_or_lower_case_is_the_same_code(
    code: str, data: st.DataObject
) -> None:
    cut = data.draw(st.integers(1, LENGTH - 1))
    typed = f" {code[:cut].lower()}-{code[cut:]} "
    assert normal_code(typed) == code


def test_what_cannot_be_a_code_is_none() -> None:
    assert normal_code("") is None
    assert normal_code("ABCDEFGHJ") is None  # 9 characters
    assert normal_code("ABCDEFGHJKM") is None  # 11
    assert normal_code("ABCDEFGHJ0") is None  # 0 is not in the alphabet
