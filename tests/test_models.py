"""Base-model loading (folder, single file, hub id), make-tiny, text encoding."""

import subprocess
import sys

import pytest
import torch

from tests.conftest import base_values
from trainer.data.synthetic import make_dataset
from trainer.families.sd.loading import ModelLoadError, encode_text, load_base_model, tokenize
from trainer.job.config import build_config
from trainer.training.loop import train


def test_make_tiny_is_deterministic_and_small(tmp_path):
    from trainer.families.tiny import make_tiny

    a, b = make_tiny(tmp_path / "a", "sd15", seed=3), make_tiny(tmp_path / "b", "sd15", seed=3)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for rel in files:
        if rel.suffix == ".safetensors":
            assert (a / rel).read_bytes() == (b / rel).read_bytes()
    assert sum((a / rel).stat().st_size for rel in files) < 8 * 2**20


def test_single_file_checkpoint_loads_with_the_same_weights(tmp_path):
    out = subprocess.run([sys.executable, "-m", "trainer.cli", "models", "make-tiny", str(tmp_path / "m"),
                          "--single-file", str(tmp_path / "m.safetensors")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    folder = load_base_model(str(tmp_path / "m"))
    single = load_base_model(str(tmp_path / "m.safetensors"), single_file_config=str(tmp_path / "m"))
    for mine, theirs in ((folder.unet, single.unet), (folder.vae, single.vae),
                         (folder.text_encoders[0], single.text_encoders[0])):
        a, b = mine.state_dict(), theirs.state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k].reshape(a[k].shape)) for k in a)
    data = tmp_path / "data"
    make_dataset(data, count=2, repeats=1)
    cfg = build_config(base_values(tmp_path / "m.safetensors", data, tmp_path / "out", max_train_epochs=1,
                                   pretrained_model_config=str(tmp_path / "m")))
    assert train(cfg).final_path.exists()


def test_missing_model_and_unreachable_hub_id_are_clear_errors(tmp_path):
    with pytest.raises(ModelLoadError, match="no such model folder or file"):
        load_base_model(str(tmp_path / "nothing"))
    with pytest.raises(ModelLoadError, match="hub id"):
        load_base_model("someone/not-a-real-model-for-lorabake")
    (tmp_path / "weird.bin").write_bytes(b"x")
    with pytest.raises(ModelLoadError, match=".safetensors or .ckpt"):
        load_base_model(str(tmp_path / "weird.bin"))


def test_long_prompts_are_encoded_in_75_token_chunks(tiny_models):
    model = load_base_model(str(tiny_models["sd15"]))
    tokenizer = model.tokenizers[0]
    ids = tokenize(tokenizer, ["a" * 100], 150)
    assert ids.shape == (1, 2, 77)
    assert ids[0, 0, 0] == ids[0, 1, 0] == tokenizer.bos_token_id and ids[0, 1, -1] == tokenizer.eos_token_id
    hidden, pooled = encode_text(model, ["x, " * 60], max_token_length=225)
    assert hidden.shape == (1, 227, 32) and pooled is None
    short, _ = encode_text(model, ["x"], clip_skip=1)
    skipped, _ = encode_text(model, ["x"], clip_skip=2)
    assert short.shape == skipped.shape == (1, 77, 32) and not torch.allclose(short, skipped)


def test_sdxl_text_encoding_concatenates_both_encoders_and_pools(tiny_models):
    model = load_base_model(str(tiny_models["sdxl"]))
    hidden, pooled = encode_text(model, ["sks", "dog"])
    assert model.family == "sdxl" and hidden.shape == (2, 77, 64) and pooled.shape == (2, 32)


def test_regularization_images_bf16_checkpointing_and_augmentations(tiny_models, tmp_path):
    make_dataset(tmp_path / "train", count=4, repeats=2)
    make_dataset(tmp_path / "reg", count=3, repeats=1, concept="shape", captions=False, seed=9)
    cfg = build_config(base_values(
        tiny_models["sd15"], tmp_path / "train", tmp_path / "out", reg_data_dir=str(tmp_path / "reg"),
        prior_loss_weight=0.5, mixed_precision="bf16", gradient_checkpointing=True, color_aug=True,
        random_crop=True, flip_aug=True, num_workers=1, max_train_epochs=1, enable_bucket=False,
    ))
    from tests.test_training import Recorder

    rec = Recorder()
    result = train(cfg, rec)
    # 8 train samples + 8 cycled reg samples in one 64×64 bucket, bs 2 → 8 steps
    assert len(rec.progress) == 8 and result.final_path.exists()


def test_ckpt_output_replacement_vae_and_previews_before_training(tiny_models, dataset, tmp_path):
    from tests.test_training import Recorder

    cfg = build_config(base_values(
        tiny_models["sd15"], dataset, tmp_path / "out", max_train_epochs=1, save_model_as="ckpt",
        vae=str(tiny_models["sd2"] / "vae"), sample_at_first=True, sample_every_n_epochs=1,
        sample_prompts=["sks --s 1"], sample_images_per_prompt=1,
    ))
    rec = Recorder()
    result = train(cfg, rec)
    assert result.final_path.name == "t.ckpt"
    weights = torch.load(result.final_path, weights_only=True)
    assert any(k.endswith(".alpha") for k in weights)
    assert [p.epoch for p in rec.previews] == [0, 1]
    assert (tmp_path / "out" / "sample" / "t_e000000_00_0.png").exists()


def test_tiny_models_carry_what_older_readers_need(tiny_models, tmp_path):
    """vocab.json + merges.txt beside tokenizer.json (transformers 4's CLIPTokenizer, sd-scripts), and CLIP weights
    under `text_model.` (transformers 4 and sd-scripts), which transformers 5 reads as well."""
    import json

    from safetensors import safe_open
    from transformers import CLIPTextModel

    folder = tiny_models["sd15"]
    vocab = json.loads((folder / "tokenizer" / "vocab.json").read_text())
    assert vocab == json.loads((folder / "tokenizer" / "tokenizer.json").read_text())["model"]["vocab"]
    assert (folder / "tokenizer" / "merges.txt").read_text().startswith("#version")
    with safe_open(str(folder / "text_encoder" / "model.safetensors"), "pt") as handle:
        assert all(key.startswith("text_model.") for key in handle.keys())  # noqa: SIM118
    model = load_base_model(str(folder))
    again = CLIPTextModel.from_pretrained(folder / "text_encoder")
    ids = torch.tensor([[vocab["<|startoftext|>"], 5, 9, vocab["<|endoftext|>"]]])
    assert torch.equal(again(ids).last_hidden_state, model.text_encoders[0](ids).last_hidden_state)
