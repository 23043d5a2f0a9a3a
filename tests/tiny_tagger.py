"""A tiny WD14-style tagger for tests: the real model's input and output names and layout, a readable rule inside.

`model.onnx` takes N × side × side × 3 float32 BGR pixels in 0–255 (input `input_1:0`) and returns N × tags
probabilities (`predictions_sigmoid`): sigmoid(channel means · W + b), so a red picture gets `red_theme`."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

RATING, GENERAL, CHARACTER = 9, 0, 4


def logit(p: float) -> float:
    return math.log(p / (1 - p))


# name, category, weights on the (b, g, r) means in 0–1, bias
TAGS: list[tuple[str, int, tuple[float, float, float], float]] = [
    ("general", RATING, (0, 0, 0), logit(0.9)),
    ("sensitive", RATING, (0, 0, 0), logit(0.1)),
    ("questionable", RATING, (0, 0, 0), -4.0),
    ("explicit", RATING, (0, 0, 0), -6.0),
    ("red_theme", GENERAL, (-6, -6, 12), -2.0),
    ("blue_theme", GENERAL, (12, -6, -6), -2.0),
    ("green_theme", GENERAL, (-6, 12, -6), -2.0),
    ("bright", GENERAL, (10 / 3, 10 / 3, 10 / 3), -6.0),
    ("hatsune_miku", CHARACTER, (-8, 16, -8), -4.0),
    ("^_^", GENERAL, (0, 0, 0), 3.0),
    ("simple_background", GENERAL, (0, 0, 0), 0.0),
]


def make_tiny_tagger(folder: Path, side: int = 64) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    folder.mkdir(parents=True, exist_ok=True)
    weights = np.array([w for _, _, w, _ in TAGS], dtype=np.float32).T / 255.0  # 3 × T, on 0–255 means
    bias = np.array([b for _, _, _, b in TAGS], dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["input_1:0"], ["means"], axes=[1, 2], keepdims=0),
         helper.make_node("MatMul", ["means", "weights"], ["scaled"]),
         helper.make_node("Add", ["scaled", "bias"], ["logits"]),
         helper.make_node("Sigmoid", ["logits"], ["predictions_sigmoid"])],
        "tiny-wd14",
        [helper.make_tensor_value_info("input_1:0", TensorProto.FLOAT, ["batch", side, side, 3])],
        [helper.make_tensor_value_info("predictions_sigmoid", TensorProto.FLOAT, ["batch", len(TAGS)])],
        [numpy_helper.from_array(weights, "weights"), numpy_helper.from_array(bias, "bias")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, folder / "model.onnx")
    with (folder / "selected_tags.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["tag_id", "name", "category", "count"])
        for index, (name, category, _, _) in enumerate(TAGS):
            writer.writerow([index, name, category, 1000 - index])
    return folder
