"""The family seam: everything about a family is declared once in its package and derived everywhere else."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from api.param_catalog import catalog
from api.training import SERVICE_KEYS
from trainer.families import FAMILIES, refused_keys
from trainer.families.declare import FamilyInfo
from trainer.job.config import PATH_KEYS, USER_KEYS, TrainConfig

ROOT = Path(__file__).resolve().parents[1]


def test_no_code_outside_the_family_packages_names_a_family():
    found = []
    for package in ("trainer", "core", "api", "worker"):
        for path in (ROOT / package).rglob("*.py"):
            if path.is_relative_to(ROOT / "trainer" / "families"):
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Constant) and node.value in FAMILIES:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.value!r}")
    assert found == []


def test_every_path_parameter_is_the_services_and_every_grouped_one_is_offered():
    declared_paths = {p.name for info in FAMILIES.values() for p in info.params if p.path}
    assert declared_paths and declared_paths <= PATH_KEYS <= SERVICE_KEYS
    offered = {p["key"]: p for group in catalog() for p in group["params"]}
    assert set(offered) == set(USER_KEYS) and not set(offered) & SERVICE_KEYS
    for info in FAMILIES.values():
        for item in info.params:
            if item.group and not item.path:
                assert offered[item.name]["help"] == item.help and info.name in offered[item.name]["families"]
                assert offered[item.name]["default"] == TrainConfig.model_fields[item.name].default


def test_a_family_refuses_the_keys_only_other_families_declare_with_their_reason():
    sd_only = {p.name: p.elsewhere for p in FAMILIES["sd15"].params}
    flux = refused_keys("flux")
    assert {k: flux[k] for k in sd_only if sd_only[k]} == {k: v for k, v in sd_only.items() if v}
    assert all(p.name not in refused_keys("chroma") for p in FAMILIES["flux"].params)
    assert refused_keys("sd15")["guidance_scale"] == "applies to Chroma and FLUX.1 models only"


def test_a_family_must_declare_its_exporter():
    fields = {f.name: f for f in dataclasses.fields(FamilyInfo)}
    assert fields["exporter"].default is dataclasses.MISSING
    with pytest.raises(TypeError, match="exporter"):
        FamilyInfo(name="x", label="X", runtime="m:C", pipeline_classes=(), resolution=512, crop_sizes=(),
                   text_encoders=1, defaults={})


def test_the_docs_parameter_reference_is_generated_from_the_declarations():
    from scripts.param_docs import main

    assert main(["--check"]) == 0  # python scripts/param_docs.py rewrites it


def test_the_readme_and_docs_point_only_inside_the_repository():
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    for page in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
        text = page.read_text()
        assert "../" not in text, f"{page.name} points outside the repository"
        for path in re.findall(r"`((?:docs|scripts|bench|trainer|api|core|worker|web)/[\w./-]+\.(?:md|py|js))`", text):
            assert (root / path).exists(), f"{page.name} names {path}, which is not in the repository"
