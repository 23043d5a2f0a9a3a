import pytest

from trainer.job.config import ConfigError
from trainer.job.prompts import extract_lora_tags, parse_prompt_line, parse_prompts


def test_sd_scripts_prompt_line_options():
    spec = parse_prompt_line("1girl, sks --n lowres, bad hands --w 768 --h 512 --d 42 --l 5.5 --s 28 --sampler ddim")
    assert spec.prompt == "1girl, sks" and spec.negative == "lowres, bad hands"
    assert (spec.width, spec.height, spec.seed, spec.cfg_scale, spec.steps, spec.sampler) == (768, 512, 42, 5.5, 28,
                                                                                             "ddim")


def test_prompt_line_errors_name_the_problem():
    with pytest.raises(ConfigError, match="--w needs a number"):
        parse_prompt_line("cat --w wide")
    with pytest.raises(ConfigError, match="unknown sampler"):
        parse_prompt_line("cat --sampler plms2")
    with pytest.raises(ConfigError, match="unknown option --q"):
        parse_prompt_line("cat --q 1")


def test_prompt_file_skips_blank_and_comment_lines(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("# previews\ncat --s 4\n\ndog\n")
    assert [s.prompt for s in parse_prompts(str(path))] == ["cat", "dog"]


def test_lora_tags_are_extracted_with_weights():
    prompt, tags = extract_lora_tags("<lora:mychar:0.8> sks, smile, <lora:style> outdoors")
    assert tags == [("mychar", 0.8), ("style", 1.0)]
    assert prompt == "sks, smile, outdoors"
