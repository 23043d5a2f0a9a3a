import json
import subprocess
import sys

import pytest

from trainer.job.config import ConfigError, build_config
from trainer.job.config_io import load_config_file, parse_overrides
from trainer.job.preflight import check, errors


def test_flat_toml_loads_with_sd_scripts_names(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('network_dim = 16\nnetwork_alpha = 8\nresolution = "768,512"\nlr_scheduler = "cosine"\n')
    cfg = load_config_file(path).config
    assert (cfg.network_dim, cfg.network_alpha, cfg.resolution_wh, cfg.lr_scheduler) == (16, 8, (768, 512), "cosine")


def test_sectioned_toml_is_flattened_like_sd_scripts_config_file(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[model_arguments]\nv2 = true\n[optimizer_arguments]\noptimizer_type = "Lion"\n'
                    'learning_rate = 3e-5\n[training_arguments]\nmax_train_epochs = 7\n')
    cfg = load_config_file(path).config
    assert cfg.v2 and cfg.optimizer_type == "Lion" and cfg.learning_rate == 3e-5 and cfg.max_train_epochs == 7


def test_conflicting_values_in_two_sections_are_an_error(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[a]\nnetwork_dim = 4\n[b]\nnetwork_dim = 8\n")
    with pytest.raises(ConfigError, match="network_dim"):
        load_config_file(path)


def test_unknown_key_is_named_with_a_suggestion(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("netwrk_dim = 4\nlearning_rte = 1e-4\nzzz = 1\n")
    with pytest.raises(ConfigError) as err:
        load_config_file(path)
    text = str(err.value)
    assert 'unknown parameter "netwrk_dim" (did you mean "network_dim"?)' in text
    assert '"learning_rte" (did you mean "learning_rate"?)' in text
    assert 'unknown parameter "zzz"' in text


def test_lora_easy_json_old_names_are_mapped(tmp_path):
    data = {
        "base_model": "/models/x.safetensors", "img_folder": "/d", "reg_img_folder": "/r", "output_folder": "/o",
        "change_output_name": "mine", "net_dim": 32, "alpha": 16, "scheduler": "cosine_with_restarts",
        "cosine_restarts": 3, "scheduler_power": 2, "warmup_lr_ratio": 0.1, "unet_only": True, "test_seed": 7,
        "train_resolution": 768, "buckets": True, "min_bucket_resolution": 320, "max_bucket_resolution": 960,
        "shuffle_captions": True, "max_clip_token_length": 150, "num_epochs": 12, "batch_size": 3,
        "gradient_acc_steps": 2, "save_as": "safetensors", "no_meta": False, "log_dir": "/logs",
        "lora_model_for_resume": "/w.safetensors", "use_8bit_adam": True, "keep_tokens": 1, "clip_skip": 2,
        "save_json_folder": "/j", "multi_run_folder": None, "tag_occurrence_txt_file": True, "vae": None,
        "load_previous_save_state": "/state",
    }
    path = tmp_path / "easy.json"
    path.write_text(json.dumps(data))
    loaded = load_config_file(path)
    cfg = loaded.config
    assert cfg.pretrained_model_name_or_path == "/models/x.safetensors"
    assert (cfg.train_data_dir, cfg.reg_data_dir, cfg.output_dir, cfg.output_name) == ("/d", "/r", "/o", "mine")
    assert (cfg.network_dim, cfg.network_alpha, cfg.lr_scheduler_num_cycles, cfg.lr_scheduler_power) == (32, 16, 3, 2)
    assert cfg.lr_warmup_steps == 0.1 and cfg.network_train_unet_only and cfg.seed == 7
    assert cfg.resolution_wh == (768, 768) and cfg.enable_bucket and cfg.min_bucket_reso == 320
    assert cfg.max_bucket_reso == 960 and cfg.shuffle_caption and cfg.max_token_length == 150
    assert (cfg.max_train_epochs, cfg.train_batch_size, cfg.gradient_accumulation_steps) == (12, 3, 2)
    assert cfg.logging_dir == "/logs" and cfg.network_weights == "/w.safetensors" and cfg.resume == "/state"
    assert cfg.optimizer_type == "AdamW8bit" and cfg.keep_tokens == 1 and cfg.clip_skip == 2
    assert any("save_json_folder" in note for note in loaded.ignored)


def test_overrides_are_typed_values():
    assert parse_overrides(["network_dim=8", "flip_aug=true", "output_name=my lora", "text_encoder_lr=[1e-5, 2e-5]"]) \
        == {"network_dim": 8, "flip_aug": True, "output_name": "my lora", "text_encoder_lr": [1e-5, 2e-5]}


def test_invalid_values_name_their_key():
    with pytest.raises(ConfigError, match="optimizer_type"):
        build_config({"optimizer_type": "Adamw"})
    with pytest.raises(ConfigError, match="resolution"):
        build_config({"resolution": "big"})


def test_alpha_zero_means_alpha_equals_dim():
    assert build_config({"network_dim": 8, "network_alpha": 0}).effective_alpha == 8
    assert build_config({"network_args": ["conv_dim=4", "conv_alpha=2"]}).effective_conv_dim == 4


def _fields(values: dict, level: str = "error") -> set[str]:
    return {f.field for f in check(build_config(values)) if f.level == level}


@pytest.mark.parametrize(("values", "field"), [
    ({"lr_scheduler": "constant", "lr_warmup_steps": 10}, "lr_warmup_steps"),
    ({"cache_latents": True, "color_aug": True}, "color_aug"),
    ({"cache_latents": True, "random_crop": True}, "random_crop"),
    ({"cache_text_encoder_outputs": True}, "cache_text_encoder_outputs"),
    ({"cache_text_encoder_outputs": True, "network_train_unet_only": True, "shuffle_caption": True},
     "shuffle_caption"),
    ({"cache_text_encoder_outputs": True, "network_train_unet_only": True, "caption_dropout_rate": 0.1},
     "caption_dropout_rate"),
    ({"network_train_unet_only": True, "network_train_text_encoder_only": True}, "network_train_text_encoder_only"),
    ({"dim_from_weights": True}, "dim_from_weights"),
    ({"train_data_dir": "/no/such/folder"}, "train_data_dir"),
])
def test_preflight_errors(values, field):
    assert field in _fields(values)


def test_preflight_warnings():
    assert "min_bucket_reso" in _fields({"enable_bucket": True, "bucket_no_upscale": True, "min_bucket_reso": 320},
                                        "warning")
    assert "mixed_precision" in _fields({"sdxl": True, "mixed_precision": "fp16"}, "warning")
    assert not errors(check(build_config({"lr_scheduler": "constant_with_warmup", "lr_warmup_steps": 10})))
    assert not errors(check(build_config({"cache_latents": True, "flip_aug": True})))


def test_preflight_reports_an_optimizer_whose_library_is_missing(monkeypatch):
    import trainer.job.preflight as pf

    monkeypatch.setattr(pf, "module_available", lambda name: name != "prodigyopt")
    found = [f for f in pf.check(build_config({"optimizer_type": "Prodigy"})) if f.level == "error"]
    assert found and "prodigyopt" in found[0].message


def test_config_presets_steps_and_preflight_import_no_torch():
    code = ("import sys, trainer.job.config, trainer.job.presets, trainer.job.steps, trainer.job.preflight, "
            "trainer.job.prompts, trainer.job.config_io; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_every_preset_is_a_valid_config_without_preflight_errors():
    from trainer.job.presets import FAMILIES, THEMES, preset_config

    for theme in THEMES:
        for family in FAMILIES:
            cfg = preset_config(theme, family)
            assert not errors(check(cfg, family)), (theme, family)
