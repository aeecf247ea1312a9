from __future__ import annotations

import pytest

from msightd.storage.sizes import SpaceFloor, format_size, parse_size, parse_space_floor


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("500GB", 500 * 10**9),
        ("20GiB", 20 * 2**30),
        ("1.5 TB", 1_500_000_000_000),
        ("64kB", 64_000),
        ("64 KiB", 65_536),
        ("123", 123),
        ("0", 0),
        (1_000_000, 1_000_000),
    ],
)
def test_sizes_in_decimal_and_binary_units_and_plain_bytes(text: object, expected: int) -> None:
    assert parse_size(text, "retain_max_size") == expected


def test_an_ambiguous_single_letter_unit_is_refused_with_both_spellings() -> None:
    with pytest.raises(ValueError, match=r'retain_max_size: unknown unit .G. in .500G. \(write "500GB" or "500GiB"\)'):
        parse_size("500G", "retain_max_size")


@pytest.mark.parametrize("value", ["lots", "-5GB", -1, 1.5, True, None, "10%"])
def test_unusable_sizes_name_the_option(value: object) -> None:
    with pytest.raises(ValueError, match="retain_max_size"):
        parse_size(value, "retain_max_size")


def test_a_percentage_floor_is_a_fraction_of_the_filesystem() -> None:
    floor = parse_space_floor("10%")
    assert floor == SpaceFloor(fraction=0.1)
    assert floor.bytes_for(1_000_000) == 100_000
    assert str(floor) == "10%"


def test_a_byte_floor_ignores_the_filesystem_size() -> None:
    floor = parse_space_floor("2GiB")
    assert floor.bytes_for(10) == 2 * 2**30
    assert parse_space_floor(4096).bytes_for(10**12) == 4096


@pytest.mark.parametrize("value", ["0%", "100%", "150%", "ten%"])
def test_percentages_outside_0_to_100_are_refused(value: str) -> None:
    with pytest.raises(ValueError, match=r"min_free_space must be a percentage between 0 and 100"):
        parse_space_floor(value)


def test_a_bad_floor_mentions_percentages_too() -> None:
    with pytest.raises(ValueError, match=r'or a percentage of the filesystem, e.g. "10%"'):
        parse_space_floor("plenty")


def test_format_size() -> None:
    assert format_size(999) == "999 B"
    assert format_size(1_650_000) == "1.65 MB"
    assert format_size(14 * 10**9) == "14 GB"
