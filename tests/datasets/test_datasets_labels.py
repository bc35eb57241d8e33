"""Label sets: native orders, canonical maps (docs/datasets.md §5 table) and paper display orders."""
import pytest

from ferlib.data import load_dataset
from ferlib.data.relabel import remap
from ferlib.labels import LABEL_SETS
from ferlib.recipes import class_order, paper_order

# docs/datasets.md §5: native index -> canonical index, row by row
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
    """EMO-Net's val8 → val7 code map {0→3, 1→4, 2→5, 3→1, 4→2, 5→6, 6→0} (docs/datasets.md §2) is RAF-DB order +
    contempt → AffectNet's native order, as docs/papers/emonet.md §7 verified on the native labels."""
    m = LABEL_SETS["emonet_affectnet8"].map_to(LABEL_SETS["affectnet"])
    assert m == {0: 3, 1: 4, 2: 5, 3: 1, 4: 2, 5: 6, 6: 0}
    assert LABEL_SETS["emonet_affectnet8"].names[7] == "contempt"


def test_remap_and_missing_class():
    assert remap([0, 6], LABEL_SETS["rafdb"], LABEL_SETS["fer2013"]) == [5, 6]
    with pytest.raises(KeyError, match="contempt"):
        remap([7], LABEL_SETS["affectnet8"], LABEL_SETS["rafdb"])


#: The order each paper's code indexes each dataset (docs/datasets.md §5), written out here by hand: the cards'
#: ``class_order:`` must give exactly these names.
RAF = ("surprise", "fear", "disgust", "happy", "sad", "anger", "neutral")
AFF7 = ("neutral", "happy", "sad", "surprise", "fear", "disgust", "anger")
AFF8 = AFF7 + ("contempt",)
ALPHA8 = ("anger", "contempt", "disgust", "fear", "happy", "neutral", "sad", "surprise")
PLUS = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt")
F2013 = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
EXPECTED_ORDERS = {
    "fermam": {"rafdb": RAF, "affectnet": AFF7, "affectnet8": ALPHA8, "ferplus": PLUS},
    "mmfrm": {"rafdb": RAF},
    "emonet": {"rafdb": RAF, "affectnet": AFF7, "affectnet8": RAF + ("contempt",)},
    "grefel": {"rafdb": RAF, "affectnet": AFF7, "affectnet8": AFF8, "ferplus": PLUS, "fer2013": F2013},
    "mfer": {"rafdb": RAF, "affectnet": AFF7, "affectnet8": AFF8},
}


@pytest.mark.parametrize("paper", sorted(EXPECTED_ORDERS))
def test_cards_give_each_papers_class_order(paper):
    for ds in ("rafdb", "affectnet", "affectnet8", "ferplus", "fer2013"):
        assert class_order(paper, ds) == EXPECTED_ORDERS[paper].get(ds), (paper, ds)


def test_paper_order_falls_back_to_the_native_order():
    assert paper_order("mmfrm", "ferplus") == LABEL_SETS["ferplus"].names  # no MMFRM FERPlus order: native
    assert paper_order("baseline", "fer2013") == LABEL_SETS["fer2013"].names
    assert paper_order("baseline", "imagefolder", ["b", "a"]) == ("b", "a")
    with pytest.raises(KeyError, match="pass native="):
        paper_order("baseline", "imagefolder")


def test_a_card_naming_an_unknown_label_set_is_refused(tmp_path, monkeypatch):
    import ferlib.recipes as recipes

    card = (recipes.CARDS_DIR / "mmfrm.yaml").read_text().replace("class_order: {rafdb: rafdb}",
                                                                   "class_order: {rafdb: raf_db}")
    (tmp_path / "mmfrm.yaml").write_text(card)
    monkeypatch.setattr(recipes, "CARDS_DIR", tmp_path)
    with pytest.raises(recipes.RecipeError, match=r"mmfrm.yaml: class_order names unknown label sets \{'rafdb': 'raf_db'\}"):
        recipes.load_card("mmfrm")


def test_unknown_dataset_and_split():
    with pytest.raises(KeyError, match="unknown dataset"):
        load_dataset("nope", ".", "train")
    with pytest.raises(ValueError, match="split must be"):
        load_dataset("rafdb", ".", "dev")
