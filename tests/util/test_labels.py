import pytest

from painmon.core.util import labels


@pytest.mark.parametrize(
    ("pspi", "expected"),
    [(0, 0), (1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (6, 3), (7, 4), (12, 4), (16, 4), (2.0, 2)],
)
def test_pspi_to_class_follows_table_1(pspi, expected):
    assert labels.pspi_to_class(pspi) == expected


@pytest.mark.parametrize("bad", [-1, 17, float("nan"), float("inf")])
def test_pspi_out_of_range_is_refused(bad):
    with pytest.raises(ValueError, match="PSPI"):
        labels.pspi_to_class(bad)


def test_biovid_levels_map_in_order():
    assert [labels.biovid_level_to_class(x) for x in ("BL1", "pa1", "PA2", "PA3", "PA4")] == [
        0,
        1,
        2,
        3,
        4,
    ]
    with pytest.raises(ValueError, match="BioVid"):
        labels.biovid_level_to_class("PA5")


def test_pspi_from_aus_uses_maxima():
    assert labels.pspi_from_aus(au4=2, au6=1, au7=3, au9=4, au10=0, au43=1) == 2 + 3 + 4 + 1
    assert labels.pspi_from_aus(5, 5, 5, 5, 5, 1) == 16
    with pytest.raises(ValueError, match="au43"):
        labels.pspi_from_aus(0, 0, 0, 0, 0, 2)


def test_class_names_configurable_and_validated():
    assert labels.class_names() == ("No pain", "Mild", "Moderate", "Strong", "Severe")
    assert labels.class_names(["a", "b", "c", "d", "e"]) == ("a", "b", "c", "d", "e")
    with pytest.raises(ValueError):
        labels.class_names(["a", "b"])
    assert labels.pspi_mapping_text() == "0->0, 1->1, 2-3->2, 4-6->3, 7-16->4"
