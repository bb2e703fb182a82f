"""A tiny ONNX 'embedding' network with its sidecar, built on the fly (bring-your-own-backbone tests)."""

from __future__ import annotations

import json

import numpy as np

SIDECAR = {"input_size": 32, "layout": "NCHW", "channels": "BGR", "scale": 255.0,
           "mean": [0.4, 0.5, 0.6], "std": [0.2, 0.25, 0.5], "output": "embedding"}


def write_network(path, extra: float = 0.0):
    """An 'embedding' network: per-channel means and the per-channel maxima of the normalised input, 6-d."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("GlobalAveragePool", ["pixels"], ["avg"]),
             helper.make_node("GlobalMaxPool", ["pixels"], ["max"]),
             helper.make_node("Concat", ["avg", "max"], ["both"], axis=1),
             helper.make_node("Add", ["both", "offset"], ["shifted"]),
             helper.make_node("Flatten", ["shifted"], ["embedding"], axis=1)]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["n", 3, 32, 32])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["n", 6])],
        initializer=[numpy_helper.from_array(np.full((1, 6, 1, 1), extra, np.float32), "offset")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    path.with_suffix(".json").write_text(json.dumps(SIDECAR))
    return path
