import json
import shutil
import subprocess
import sys

import pytest

from hyperver.cli import COMMANDS, main

PEOPLE = ["Zico", "Abel_Pacheco", "Akhmed_Zakayev", "Amber_Tamblyn", "Anders_Fogh_Rasmussen", "Angela_Bassett",
          "Ann_Veneman", "Anna_Kournikova", "Anthony_Hopkins", "Antonio_Palocci"]


@pytest.fixture()
def mini_lfw(tmp_path, lfw_images):
    """An LFW-layout root with 10 folds of 2 pairs and 10 people sets, from real LFW images."""
    root = tmp_path / "data" / "lfw"
    for p in PEOPLE:
        (root / "images" / p).mkdir(parents=True)
        for n in (1, 2):
            shutil.copy(lfw_images / p / f"{p}_{n:04d}.jpg", root / "images" / p)
    pairs = ["10\t1"]
    for k, p in enumerate(PEOPLE):
        pairs += [f"{p}\t1\t2", f"{p}\t1\t{PEOPLE[(k + 1) % 10]}\t2"]
    (root / "pairs.txt").write_text("\n".join(pairs) + "\n")
    people = ["10"] + [line for p in PEOPLE for line in ("1", f"{p}\t2")]
    (root / "people.txt").write_text("\n".join(people) + "\n")
    return root.parent


def test_every_subcommand_has_help():
    for name in COMMANDS:
        out = subprocess.run([sys.executable, "-m", "hyperver.cli", name, "--help"], capture_output=True, text=True)
        assert out.returncode == 0 and "usage: hyperver" in out.stdout


def test_eval_writes_results_with_command_and_commit(tmp_path, mini_lfw, capsys):
    out = tmp_path / "results" / "mini.json"
    code = main(["eval", "--model", "dlib", "--protocol", "lfw", "--folds", "1-10", "6-10", "--out", str(out),
                 "--set", f"data.root={mini_lfw}", "--set", f"cache.root={tmp_path / 'cache'}",
                 "--set", "embed.workers=1"])
    assert code == 0
    res = json.loads(out.read_text())
    assert res["command"] and res["commit"]
    for key in ("folds_1_10", "folds_6_10"):
        assert set(res[key]) >= {"accuracy", "accuracy_std", "val_at_far_1e3", "auc", "eer"}
        assert 0.5 <= res[key]["accuracy"] <= 1.0
    assert res["folds_1_10"]["n_pairs"] == 20 and res["folds_6_10"]["n_pairs"] == 10
    assert res["fallback_crops"] == 0
    assert res["identification_test_sets_6_10"]["people"] == 5
    assert (tmp_path / "results" / "mini_roc.png").stat().st_size > 1000
    assert "| folds_1_10 |" in capsys.readouterr().out


def test_model_that_saw_lfw_cannot_report_training_folds(tmp_path, mini_lfw, capsys):
    from tests.hyperver.test_embed import tiny_onnx_model

    tiny_onnx_model(tmp_path / "m.onnx")
    code = main(["eval", "--model", "mine", "--folds", "1-10", "--set", f"data.root={mini_lfw}",
                 "--set", f"embedders.mine={{kind: onnx, path: {tmp_path / 'm.onnx'}}}",
                 "--set", f"cache.root={tmp_path / 'cache'}"])
    assert code == 2
    assert "test folds 6-10 only" in capsys.readouterr().err


def test_errors_exit_2_with_a_clear_message(tmp_path, two_faces_image, capsys):
    from PIL import Image

    photo = tmp_path / "two.jpg"
    Image.fromarray(two_faces_image).save(photo)
    assert main(["align", str(photo), "-o", str(tmp_path / "crop.png")]) == 2
    assert "2 faces found" in capsys.readouterr().err
    assert main(["align", str(tmp_path / "missing.jpg"), "-o", str(tmp_path / "c.png")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["eval", "--set", f"data.root={tmp_path / 'nowhere'}", "--set", f"cache.root={tmp_path}"]) == 2
    assert "root not found" in capsys.readouterr().err
    assert main(["eval", "--set", "align.crop_sise=3"]) == 2
    assert "did you mean" in capsys.readouterr().err
