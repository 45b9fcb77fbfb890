"""Image rows through a tiny Qwen2-VL (with placeholder images), and ``metaembed train``."""

from __future__ import annotations

import pytest
from PIL import Image

from metaembed.training.trainer import train
from tests.training.training_support import TOY_DATA, write_jsonl


def _image_rows(folder):
    colours = {
        "red": (220, 20, 20),
        "green": (20, 200, 20),
        "blue": (20, 20, 220),
        "yellow": (230, 220, 0),
    }
    rows = []
    for name, rgb in colours.items():
        Image.new("RGB", (56, 56), rgb).save(folder / f"{name}.png")
    names = list(colours)
    for i in range(8):
        name, other = names[i % 4], names[(i + 1) % 4]
        rows.append(
            {
                "qry": f"<|image_1|>\nRepresent the given image for classification {i}",
                "qry_image_path": f"{name}.png",
                "pos_text": f"a {name} square",
                "pos_image_path": "",
                "neg_text": f"a {other} square",
                "neg_image_path": "",
            }
        )
    return rows


@pytest.mark.parametrize("placeholder", [False, True])
def test_image_rows_train_a_vision_language_model(tmp_path, placeholder):
    (tmp_path / "data").mkdir()
    write_jsonl(tmp_path / "data/ImageNet_1K.jsonl", _image_rows(tmp_path / "data"))
    from tests.training.training_support import tiny_config

    config = tiny_config(
        tmp_path / "run",
        tiny_family="qwen2_vl",
        train_data=[str(tmp_path / "data")],
        batch_size=4,
        max_steps=2,
        chunk_size=3,
        eval_fraction=0.0,
        placeholder_image=placeholder,
        placeholder_image_size=28,
    )
    result = train(config)
    assert result.steps == 2 and all(r["loss"] > 0 for r in result.history)
    assert result.best_checkpoint is None and result.final_checkpoint.is_dir()  # nothing held out


def test_text_only_family_refuses_image_rows(tmp_path):
    (tmp_path / "data").mkdir()
    write_jsonl(tmp_path / "data/a.jsonl", _image_rows(tmp_path / "data"))
    from tests.training.training_support import tiny_config

    with pytest.raises(ValueError, match="text-only"):
        train(tiny_config(tmp_path / "run", train_data=[str(tmp_path / "data")], batch_size=4))


def test_cli_trains_and_reports_errors(tmp_path, capsys):
    from metaembed_cli.main import main

    config = tmp_path / "tiny.yaml"
    config.write_text(
        "tiny_family: llama\nnum_query_tokens: 2\nnum_candidate_tokens: 4\ngroups: ['1x1', '2x4']\n"
        f"lora_r: 2\nlora_alpha: 2\ntrain_data: ['{TOY_DATA}']\nbatch_size: 4\n"
        "show_progress: false\n"
    )
    code = main(
        [
            "train",
            str(config),
            "--max_steps",
            "2",
            "--output_dir",
            str(tmp_path / "out"),
            "--eval_steps=none",
        ]
    )
    assert code == 0
    assert "trained 2 steps" in capsys.readouterr().out
    assert (tmp_path / "out/final/metaembed_config.json").is_file()
    assert main(["train", str(config), "--max_stepz", "2"]) == 2
    assert "unknown training config keys ['max_stepz']" in capsys.readouterr().err
    bad = write_jsonl(tmp_path / "bad.jsonl", ['{"qry": "q"}'])
    assert (
        main(["train", str(config), "--train_data", str(bad), "--output_dir", str(tmp_path / "o2")])
        == 2
    )
    assert "bad.jsonl row 0: missing field(s) ['pos_text']" in capsys.readouterr().err
