import pytest

from hyperver.data import LFWDataset, LFWSplit, parse_folds
from hyperver.errors import DatasetError


def test_view2_pairs_and_people(data_root):
    lfw = LFWDataset(data_root / "lfw")
    folds = lfw.read_pairs("pairs.txt")
    assert len(folds) == 10 and all(len(f) == 600 for f in folds)
    assert sum(p.same for p in folds[0]) == 300
    assert all(p.a.path.exists() and p.b.path.exists() for p in folds[5][:20])
    sets = lfw.read_people("people.txt")
    assert len(sets) == 10
    assert sum(n for s in sets for _, n in s) == 13233


def test_view1_lists(data_root):
    lfw = LFWDataset(data_root / "lfw")
    (train,) = lfw.read_pairs("pairsDevTrain.txt")
    assert len(train) == 2200
    (people,) = lfw.read_people("peopleDevTrain.txt")
    assert len(people) == 4038


def test_split_is_people_disjoint_and_fixed(data_root):
    split = LFWSplit(LFWDataset(data_root / "lfw"))
    train = {n for n, _ in split.people("train")}
    val = {n for n, _ in split.people("val")}
    test = {n for n, _ in split.people("test")}
    assert not (train & val) and not (train & test) and not (val & test)
    assert len(split.records("train")) == 5149
    # Pairs of the test folds only use test people.
    assert all(p.a.identity in test and p.b.identity in test for p in split.pairs(parse_folds("6-10")))


def _fake_lfw(tmp_path, pairs_text):
    root = tmp_path / "lfw"
    (root / "images").mkdir(parents=True)
    (root / "pairs.txt").write_text(pairs_text)
    return LFWDataset(root)


def test_malformed_pairs_lines_point_at_the_line(tmp_path):
    lfw = _fake_lfw(tmp_path, "1\t1\nAlice\t1\nBob\t1\tCarol\t2\n")
    with pytest.raises(DatasetError, match=r"pairs.txt:2: malformed line"):
        lfw.read_pairs()
    lfw = _fake_lfw(tmp_path / "b", "1\t1\nAlice\tone\t2\nBob\t1\tCarol\t2\n")
    with pytest.raises(DatasetError, match=r"pairs.txt:2: expected"):
        lfw.read_pairs()
    lfw = _fake_lfw(tmp_path / "c", "1\t2\nAlice\t1\t2\n")
    with pytest.raises(DatasetError, match="ends early"):
        lfw.read_pairs()
    lfw = _fake_lfw(tmp_path / "d", "ten 300\n")
    with pytest.raises(DatasetError, match=r"pairs.txt:1"):
        lfw.read_pairs()


def test_missing_dataset_root(tmp_path):
    with pytest.raises(DatasetError, match="LFW root not found"):
        LFWDataset(tmp_path / "nowhere")
    with pytest.raises(DatasetError, match="list file not found"):
        _fake_lfw(tmp_path, "1 1\n").read_people("people.txt")


def test_open_dataset_from_config(cfg, tmp_path):
    from hyperver.config import load_config
    from hyperver.data import open_dataset
    from hyperver.errors import ConfigError

    assert len(open_dataset(cfg, "celeba").records()) == 4550
    with pytest.raises(ConfigError, match="unknown dataset"):
        open_dataset(cfg, "vggface3")
    missing = load_config(overrides=[f"data.root={tmp_path / 'none'}"], env={})
    with pytest.raises(DatasetError, match="root not found"):
        open_dataset(missing, "celeba")


def test_people_format_is_recognised_by_content_not_file_name(tmp_path):
    lfw = _fake_lfw(tmp_path, "1 1\n")
    (lfw.root / "mine_view2.txt").write_text("2\n1\nAlice\t3\n2\nBob\t1\nCarol\t2\n")
    assert lfw.read_people("mine_view2.txt") == [[("Alice", 3)], [("Bob", 1), ("Carol", 2)]]
    (lfw.root / "people.txt").write_text("2\nAlice\t3\nBob\t1\n")
    assert lfw.read_people("people.txt") == [[("Alice", 3), ("Bob", 1)]]


def test_parse_folds():
    assert parse_folds("6-10") == (6, 7, 8, 9, 10)
    assert parse_folds("1,3,5-6") == (1, 3, 5, 6)
    for bad in ("0-3", "7-5", "x", "11"):
        with pytest.raises(ValueError):
            parse_folds(bad)
