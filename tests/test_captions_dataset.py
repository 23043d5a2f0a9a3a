import random

from trainer.data.captions import CaptionRules, process_caption
from trainer.data.dataset import scan_dataset
from trainer.data.synthetic import make_dataset

CAPTION = "sks, 1girl, red hair, smile, outdoors, looking at viewer"


def test_keep_tokens_keeps_the_trigger_word_first_over_many_draws():
    rules = CaptionRules(shuffle=True, keep_tokens=1, tag_dropout_rate=0.4)
    rng = random.Random(0)
    draws = [process_caption(CAPTION, rules, rng, epoch=1) for _ in range(500)]
    assert all(d.split(", ")[0] == "sks" for d in draws)
    assert len({d for d in draws}) > 50  # the rest really is shuffled and dropped
    assert any(len(d.split(", ")) < 6 for d in draws)


def test_keep_tokens_counts_tags_not_clip_tokens():
    rules = CaptionRules(shuffle=True, keep_tokens=2)
    rng = random.Random(1)
    assert all(process_caption(CAPTION, rules, rng, 1).startswith("sks, 1girl, ") for _ in range(200))


def test_caption_dropout_rate_and_every_n_epochs():
    rng = random.Random(2)
    draws = [process_caption(CAPTION, CaptionRules(dropout_rate=0.3), rng, 1) for _ in range(1000)]
    assert 200 < draws.count("") < 400
    every = CaptionRules(dropout_every_n_epochs=3)
    assert process_caption(CAPTION, every, rng, 3) == "" and process_caption(CAPTION, every, rng, 4) == CAPTION


def test_scan_reads_repeats_captions_and_falls_back_to_the_class_token(tmp_path):
    make_dataset(tmp_path / "train", count=4, repeats=3, concept="sks dog")
    make_dataset(tmp_path / "train", count=2, repeats=1, concept="plain", captions=False)
    (tmp_path / "train" / "no_number").mkdir()
    make_dataset(tmp_path / "reg", count=2, repeats=1, concept="dog", captions=False)
    scan = scan_dataset(tmp_path / "train", tmp_path / "reg")
    assert len(scan.train) == 6 and len(scan.reg) == 2
    assert {r.repeats for r in scan.train if r.folder == "3_sks dog"} == {3}
    assert {r.caption for r in scan.train if r.folder == "1_plain"} == {"plain"}
    assert any("no .txt caption" in w and "plain" in w for w in scan.warnings)
    assert any("no_number" in w for w in scan.warnings)
    assert scan.tag_frequency()["3_sks dog"]["sks"] == 4
    assert scan.dataset_dirs() == {"3_sks dog": {"n_repeats": 3, "img_count": 4},
                                   "1_plain": {"n_repeats": 1, "img_count": 2}}


def test_caption_extension_is_configurable(tmp_path):
    folder = make_dataset(tmp_path, count=1, repeats=1)
    (folder / "img0000.txt").rename(folder / "img0000.caption")
    assert scan_dataset(tmp_path, None, ".caption").train[0].caption.startswith("sks")
    assert scan_dataset(tmp_path, None, ".txt").train[0].caption == "sks shape"
