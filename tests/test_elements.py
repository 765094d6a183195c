import pytest

from fusex.elements import SYMBOLS, atomic_number, atomic_numbers


def test_table_covers_the_periodic_table():
    assert len(SYMBOLS) == 118
    assert atomic_number("H") == 1 and atomic_number("O") == 8 and atomic_number("Og") == 118


@pytest.mark.parametrize(("name", "z"), [("Sc", 21), ("dy", 66), ("FE", 26), ("Fe_Ka", 26), ("O_K", 8), (" Ti ", 22)])
def test_lookup_is_case_insensitive_and_accepts_line_names(name, z):
    assert atomic_number(name) == z


def test_unknown_symbol_suggests_close_matches():
    with pytest.raises(ValueError, match=r"unknown element symbol 'Tx'.*Did you mean"):
        atomic_number("Tx")


def test_non_string_symbol_is_a_type_error():
    with pytest.raises(TypeError):
        atomic_number(8)


def test_atomic_numbers_keeps_order():
    assert atomic_numbers(["Sr", "Ti", "O"]) == (38, 22, 8)
