"""Vendor and HyperSpy names of maps and lines read as element symbols (`fusex.elements.parse_element_name`)."""

import pytest

from fusex.elements import atomic_number, parse_element_name


@pytest.mark.parametrize(
    ("name", "symbol"),
    [
        ("Fe", "Fe"),
        ("Fe-EELS", "Fe"),
        ("Sr La", "Sr"),
        ("Fe L3", "Fe"),
        ("Mn L2,3", "Mn"),
        ("Dy M4,5", "Dy"),
        ("Fe_Ka", "Fe"),
        ("Ti Ka1", "Ti"),
        ("O K map", "O"),
        ("Stack of Fe_Ka", "Fe"),
        ("Stack of Stack of O", "O"),
        ("X-ray line intensity of EDS: Cu_Ka at 8.04 keV", "Cu"),
        (" pt_la ", "Pt"),
    ],
)
def test_vendor_names_give_symbols(name, symbol):
    assert parse_element_name(name) == symbol


@pytest.mark.parametrize("title", ["SE", "BSE", "HAADF", "BF", "DF4", "Ch 1", "EDS", "Fe something"])
def test_detector_titles_are_not_elements(title):
    with pytest.raises(ValueError, match="cannot read an element"):
        parse_element_name(title, case_sensitive=True)


def test_case_sensitive_reading_needs_the_chemists_capitals():
    assert parse_element_name("SE") == "Se"
    with pytest.raises(ValueError, match="'SE'"):
        parse_element_name("SE", case_sensitive=True)


def test_atomic_number_accepts_vendor_names():
    assert [atomic_number(n) for n in ("Fe-EELS", "Sr La", "Fe L3", "Stack of O_Ka")] == [26, 38, 26, 8]
    with pytest.raises(ValueError, match=r"unknown element symbol 'Xx La'"):
        atomic_number("Xx La")


def test_non_string_is_a_type_error():
    with pytest.raises(TypeError):
        parse_element_name(26)
