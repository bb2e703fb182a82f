"""The ``style`` feature set: statistics of intermediate ResNet50 stages that describe a *look*.

The pooled last stage (the ``pooled`` set) describes objects; a colour grade, grain, softness or
compression lives in the earlier stages. The style vector is, for each of a few stage outputs, the
per-channel mean and standard deviation over all spatial positions (the first two moments behind
neural style transfer's Gram matrices), concatenated. It is built *inside* the Keras graph by
:func:`style_head`, so the one multi-output model that computes ``pooled`` computes ``style`` in the
same forward pass, and every runtime exported, converted or quantized from that model has it too.

:func:`style_fingerprint` names the set: the pooled fingerprint of the same network (weights,
precision, geometry) plus the layers, statistics and a version of this recipe.
"""

from __future__ import annotations

# Stage outputs of keras.applications.ResNet50 (the first two of the four residual stages), and their widths.
# Chosen by measurement on the shared style tasks (benchmarks/style_eval.py; README "Choosing features"):
# stages 1-2 beat stages 1-3 on the colour grade (logistic regression, 5 folds: accuracy 0.968 vs 0.950,
# ROC AUC 0.998 vs 0.993) and matched them on defocus; adding stage 3 or 4 adds content, not look.
STYLE_LAYERS = ("conv2_block3_out", "conv3_block4_out")
LAYER_CHANNELS = {"conv2_block3_out": 256, "conv3_block4_out": 512, "conv4_block6_out": 1024,
                  "conv5_block3_out": 2048}
STATISTICS = ("mean", "std")
# Bump whenever the layers, statistics or their order change: it is part of the fingerprint.
STYLE_VERSION = 2
STYLE_DIM = sum(LAYER_CHANNELS[name] for name in STYLE_LAYERS) * len(STATISTICS)

__all__ = ["STATISTICS", "STYLE_DIM", "STYLE_LAYERS", "STYLE_VERSION", "channel_stats", "style_fingerprint",
           "style_head"]


def channel_stats(tensor):
    """Per-channel mean and standard deviation over the spatial axes of an NHWC tensor → ``(n, 2·c)``.

    Written with elementary ops (mean, subtract, square, sqrt) so that ONNX export and static
    quantization see nothing exotic; the standard deviation is the population one.
    """
    from keras import ops

    mean = ops.mean(tensor, axis=(1, 2), keepdims=True)
    var = ops.mean(ops.square(tensor - mean), axis=(1, 2))
    return ops.concatenate([ops.squeeze(mean, axis=(1, 2)), ops.sqrt(var + 1e-12)], axis=-1)


def style_head(resnet_model):
    """The style vector of ``resnet_model``'s input as a Keras tensor of shape ``(n, STYLE_DIM)``.

    Parameters
    ----------
    resnet_model : keras.Model
        A ``keras.applications.ResNet50`` (any ``include_top``/``pooling``); its layers named in
        :data:`STYLE_LAYERS` are tapped. Build the multi-output model with
        ``keras.Model(resnet_model.input, {"pooled": resnet_model.output, "style": style_head(resnet_model)})``.

    Returns
    -------
    KerasTensor
        float32 ``(n, STYLE_DIM)``: for each layer in order, the ``c`` channel means, then the ``c`` standard
        deviations.
    """
    from keras import ops

    parts = [channel_stats(resnet_model.get_layer(name).output) for name in STYLE_LAYERS]
    return ops.concatenate(parts, axis=-1) if len(parts) > 1 else parts[0]


def style_fingerprint(pooled_fp: dict) -> dict:
    """The fingerprint of the ``style`` set computed by the same network as ``pooled_fp`` (any precision).

    Everything that decides the network (weights, precision, quantization, geometry, preprocessing)
    is kept from ``pooled_fp``; pooling and dimension are replaced by this recipe's.
    """
    fp = {k: v for k, v in pooled_fp.items() if k not in ("pooling", "feature_dim")}
    fp.update({
        "feature_set": "style",
        "style_layers": list(STYLE_LAYERS),
        "style_statistics": list(STATISTICS),
        "style_version": STYLE_VERSION,
        "pooling": "per-channel " + " and ".join(STATISTICS) + " over spatial positions of each style layer",
        "feature_dim": STYLE_DIM,
    })
    return fp
