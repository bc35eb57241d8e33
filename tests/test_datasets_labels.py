"""Label sets: native orders, canonical maps (datasets.md §5 table) and paper display orders."""
import pytest

from ferlib.data import load_dataset
from ferlib.data.labels import CANONICAL, LABEL_SETS, PAPER_ORDERS, paper_order, remap

# datasets.md §5: native index -> canonical index, row by row
TABLE = {
    "rafdb": (3, 4, 5, 1, 2, 6, 0),
    "affectnet": (0, 1, 2, 3, 4, 5, 6),
    "affectnet8": (0, 1, 2, 3, 4, 5, 6, 7),
    "affectnet8_alpha": (6, 7, 5, 4, 1, 0, 2, 3),
    "affectnet7_alpha": (6, 5, 4, 1, 0, 2, 3),
    "ferplus": (0, 1, 3, 2, 6, 5, 4, 7),
    "ferplus_alpha": (6, 7, 5, 4, 1, 0, 2, 3),
    "fer2013": (6, 5, 4, 1, 2, 3, 0),
}


@pytest.mark.parametrize("name", sorted(TABLE))
def test_canonical_maps(name):
    assert LABEL_SETS[name].to_canonical == TABLE[name]


def test_emonet_val8_to_val7_map():
    """EMO-Net's val8 → val7 code map {0→3, 1→4, 2→5, 3→1, 4→2, 5→6, 6→0} (datasets.md §2) is RAF-DB order +
    contempt → AffectNet's native order, as emonet.md §7 verified on the native labels."""
    m = LABEL_SETS["emonet_affectnet8"].map_to(LABEL_SETS["affectnet"])
    assert m == {0: 3, 1: 4, 2: 5, 3: 1, 4: 2, 5: 6, 6: 0}
    assert LABEL_SETS["emonet_affectnet8"].names[7] == "contempt"


def test_remap_and_missing_class():
    assert remap([0, 6], LABEL_SETS["rafdb"], LABEL_SETS["fer2013"]) == [5, 6]
    with pytest.raises(KeyError, match="contempt"):
        remap([7], LABEL_SETS["affectnet8"], LABEL_SETS["rafdb"])


def test_paper_orders():
    assert PAPER_ORDERS["fermam"]["affectnet8"][0] == "anger"
    assert paper_order("mmfrm", "rafdb")[0] == "surprise"
    assert paper_order("baseline", "fer2013") == LABEL_SETS["fer2013"].names
    for paper, per in PAPER_ORDERS.items():
        for ds, order in per.items():
            assert {n for n in map(str, order)} <= set(CANONICAL) | {"happiness", "sadness", "angry"}, (paper, ds)
            assert len(order) in (7, 8)


def test_unknown_dataset_and_split():
    with pytest.raises(KeyError, match="unknown dataset"):
        load_dataset("nope", ".", "train")
    with pytest.raises(ValueError, match="split must be"):
        load_dataset("rafdb", ".", "dev")
