"""Translate the headless Keras ResNet50 into an ONNX graph that takes the same uint8 RGB batches.

Only the layer kinds a Keras ResNet50 is made of are supported (Conv2D, BatchNormalization, ReLU,
Add, ZeroPadding2D, MaxPooling2D, GlobalAveragePooling2D); anything else is an error rather than a
silently different network. Three things are folded in on the way, none of which changes the
result beyond float rounding:

- Keras' caffe preprocessing: the RGB→BGR flip becomes a permutation of the first convolution's
  input channels, and the ImageNet mean is subtracted in the graph, so the input is the raw
  ``uint8 (n, 224, 224, 3)`` batch the Keras backbone takes;
- every BatchNormalization into the convolution before it (inference mode: fixed statistics);
- each ZeroPadding2D into the padding of the convolution or max-pooling after it (max-pooling
  follows a ReLU, so zero padding and ONNX's ignore-the-border padding give the same maxima).
"""

from __future__ import annotations

import numpy as np

from stylesift.errors import StylesiftError

# keras.applications.imagenet_utils "caffe" mode, channel order BGR.
IMAGENET_MEAN_BGR = (103.939, 116.779, 123.68)
OPSET = 17


class UnsupportedLayer(StylesiftError, ValueError):
    """The Keras model holds a layer this exporter does not translate."""


def export_resnet(model, *, input_size: int = 224):
    """The ONNX model of a headless, average-pooled Keras ResNet50 with weights loaded.

    Parameters
    ----------
    model : keras.Model
        ``keras.applications.ResNet50(include_top=False, pooling="avg")`` with its weights.
    input_size : int
        Side of the square input in pixels.

    Returns
    -------
    onnx.ModelProto
        Input ``images``: uint8 of shape ``(n, input_size, input_size, 3)``, RGB;
        output ``features``: float32 of shape ``(n, 2048)``.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits = [], []

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    mean_rgb = np.array(IMAGENET_MEAN_BGR[::-1], np.float32).reshape(1, 1, 1, 3)
    nodes += [
        helper.make_node("Cast", ["images"], ["images_f"], to=TensorProto.FLOAT),
        helper.make_node("Sub", ["images_f", const("imagenet_mean_rgb", mean_rgb)], ["centred"]),
        helper.make_node("Transpose", ["centred"], ["nchw"], perm=[0, 3, 1, 2]),
    ]
    layers = {layer.name: layer for layer in model.layers}
    consumers: dict[str, list[str]] = {}
    for layer in model.layers:
        for src in _inputs(layer):
            consumers.setdefault(src, []).append(layer.name)

    out_name: dict[str, str] = {}  # Keras layer name -> ONNX tensor holding its output
    pending_pad: dict[str, tuple[int, int, int, int]] = {}  # padded layer -> (top, left, bottom, right)
    folded: set[str] = set()  # BatchNormalizations merged into their convolution
    first_conv = True

    for layer in model.layers:
        kind = type(layer).__name__
        srcs = _inputs(layer)
        src = out_name.get(srcs[0]) if srcs else None
        name = layer.name
        if kind == "InputLayer":
            out_name[name] = "nchw"
        elif kind == "ZeroPadding2D":
            (top, bottom), (left, right) = layer.padding
            for c in consumers.get(name, []):
                if type(layers[c]).__name__ not in ("Conv2D", "MaxPooling2D"):
                    raise UnsupportedLayer(f"{name}: zero padding feeds {c}, expected a convolution or max-pooling")
            pending_pad[name] = (top, left, bottom, right)
            out_name[name] = src
        elif kind == "Conv2D":
            _require(layer, layer.data_format == "channels_last" and tuple(layer.dilation_rate) == (1, 1)
                     and layer.groups == 1 and layer.get_config()["activation"] == "linear")
            kernel, bias = _conv_params(layer)
            if first_conv:
                kernel = kernel[:, :, ::-1, :]  # the network was trained on BGR; our input is RGB
                first_conv = False
            bn_name = _single_consumer(consumers, name)
            if bn_name and type(layers[bn_name]).__name__ == "BatchNormalization":
                kernel, bias = _fold_batchnorm(layers[bn_name], kernel, bias)
                folded.add(bn_name)
            pads = _conv_pads(layer, pending_pad.get(srcs[0]))
            w = const(f"{name}/W", kernel.transpose(3, 2, 0, 1).astype(np.float32))  # HWIO -> OIHW
            b = const(f"{name}/B", bias.astype(np.float32))
            nodes.append(helper.make_node("Conv", [src, w, b], [name], name=name, kernel_shape=list(layer.kernel_size),
                                          strides=list(layer.strides), pads=pads))
            out_name[name] = name
            if bn_name in folded:
                out_name[bn_name] = name
        elif kind == "BatchNormalization":
            if name not in folded:
                raise UnsupportedLayer(f"{name}: batch normalization that does not follow a convolution")
        elif kind == "Activation":
            _require(layer, layer.get_config()["activation"] == "relu")
            nodes.append(helper.make_node("Relu", [src], [name], name=name))
            out_name[name] = name
        elif kind == "Add":
            nodes.append(helper.make_node("Add", [out_name[s] for s in srcs], [name], name=name))
            out_name[name] = name
        elif kind == "MaxPooling2D":
            _require(layer, layer.padding == "valid")
            top, left, bottom, right = pending_pad.get(srcs[0], (0, 0, 0, 0))
            nodes.append(helper.make_node("MaxPool", [src], [name], name=name, kernel_shape=list(layer.pool_size),
                                          strides=list(layer.strides), pads=[top, left, bottom, right]))
            out_name[name] = name
        elif kind == "GlobalAveragePooling2D":
            nodes.append(helper.make_node("GlobalAveragePool", [src], [name + "/nc11"], name=name))
            nodes.append(helper.make_node("Flatten", [name + "/nc11"], ["features"], axis=1))
            out_name[name] = "features"
        else:
            raise UnsupportedLayer(f"{name}: Keras layer {kind} is not supported by the ONNX exporter")

    if out_name.get(model.layers[-1].name) != "features":
        raise UnsupportedLayer("the model must end in GlobalAveragePooling2D (build it with pooling='avg')")
    dim = int(model.output_shape[-1])
    graph = helper.make_graph(
        nodes, "stylesift_resnet50",
        [helper.make_tensor_value_info("images", TensorProto.UINT8, ["n", input_size, input_size, 3])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["n", dim])],
        initializer=inits,
    )
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="stylesift")
    onnx_model.ir_version = 8  # readable by every onnxruntime of the last years
    onnx.checker.check_model(onnx_model)
    return onnx_model


def _inputs(layer) -> list[str]:
    node = layer._inbound_nodes[0]
    return [t._keras_history.operation.name for t in node.input_tensors]


def _single_consumer(consumers: dict[str, list[str]], name: str) -> str | None:
    users = consumers.get(name, [])
    return users[0] if len(users) == 1 else None


def _require(layer, ok: bool) -> None:
    if not ok:
        raise UnsupportedLayer(f"{layer.name}: {type(layer).__name__} configuration {layer.get_config()} is not supported")


def _conv_params(layer) -> tuple[np.ndarray, np.ndarray]:
    weights = [np.asarray(w, np.float64) for w in layer.get_weights()]
    kernel = weights[0]
    bias = weights[1] if layer.use_bias else np.zeros(kernel.shape[-1])
    return kernel, bias


def _fold_batchnorm(bn, kernel: np.ndarray, bias: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inference-mode BN(conv(x)) as one convolution: scale the output channels, shift the bias."""
    cfg = bn.get_config()
    if cfg["axis"] not in (-1, 3, [3], [-1]):
        raise UnsupportedLayer(f"{bn.name}: batch normalization over axis {cfg['axis']}, expected the channel axis")
    params = dict(zip([w.path.split("/")[-1] for w in bn.weights], [np.asarray(w, np.float64) for w in bn.weights]))
    gamma = params.get("gamma", np.ones(kernel.shape[-1]))
    beta = params.get("beta", np.zeros(kernel.shape[-1]))
    scale = gamma / np.sqrt(params["moving_variance"] + bn.epsilon)
    return kernel * scale, (bias - params["moving_mean"]) * scale + beta


def _conv_pads(layer, explicit: tuple[int, int, int, int] | None) -> list[int]:
    """ONNX ``pads`` (top, left, bottom, right) equal to Keras' padding of this convolution."""
    if layer.padding == "valid":
        return list(explicit or (0, 0, 0, 0))
    if explicit:
        raise UnsupportedLayer(f"{layer.name}: explicit zero padding before a 'same' convolution")
    kh, kw = layer.kernel_size
    if tuple(layer.strides) != (1, 1) or kh % 2 == 0 or kw % 2 == 0:
        raise UnsupportedLayer(f"{layer.name}: 'same' padding is only exported for stride 1 and odd kernels")
    return [kh // 2, kw // 2, kh // 2, kw // 2]
