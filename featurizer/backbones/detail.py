"""The ``detail`` feature set: early ResNet50 statistics on tiles taken from the image at native resolution.

Every other set sees the image shrunk to 224 × 224, where sensor noise, slight defocus and
compression artefacts are gone. ``detail`` sees :data:`stylesift.featurizer.tiles.TILES` tiles of
``TILE`` × ``TILE`` pixels cut from the full-size picture (see :mod:`stylesift.featurizer.tiles` for
where and how they are decoded), runs each through the first stages of the same ImageNet ResNet50,
takes per-channel mean and standard deviation of :data:`DETAIL_LAYERS` over the tile (as the ``style``
set does over the whole image) and averages them over the tiles: ``(n, DETAIL_DIM)``.

The network is the truncated Keras ResNet50 (stages past the last detail layer are not computed,
so a tile costs a fifth of a full forward pass of the same size); OpenVINO float32 is converted from
it and checked against it (per-image cosine ≥ :data:`FLOAT32_MIN_COSINE`), INT8 is NNCF's
quantization of that, on native-resolution calibration tiles. The recipe (layers, statistics,
tiles, decoder) is in :func:`detail_fingerprint`, so a change of any is another feature space.
Chosen by measurement (docs/choosing-features.md, "detail"). This module is the recipe and its
Keras graph; :mod:`stylesift.featurizer.backbones.detail_net` runs it on each runtime.
"""

from __future__ import annotations

from stylesift.featurizer import tiles as tiling
from stylesift.featurizer.weights import Weights

# conv2 alone matched conv2 + conv3 on sensor noise and defocus (logistic regression, 5 folds:
# 0.995-0.997 accuracy either way) at 45 % of the compute; conv1 added nothing. Version 2 stops at
# conv2's second block on 112-px tiles: 12.6 instead of 19.4 CPU-ms an image, no loss measured
# (block 1 lost 0.009 on defocus; docs/choosing-features.md). Version 3 keeps that network and, on
# frames of 896 px and more, feeds it the nine busiest of up to 64 candidate tiles (tiles.py); version 4
# ranks those candidates on the JPEG draft the 224-px input is decoded from, so only the nine are
# decoded at full size (12-MP photo: 23 instead of 32 ms).
DETAIL_LAYERS = ("conv2_block2_out",)
DETAIL_CHANNELS = 256
STATISTICS = ("mean", "std")
DETAIL_VERSION = 4  # bump when layers, statistics, pooling or placement change: part of the fingerprint
DETAIL_DIM = DETAIL_CHANNELS * len(DETAIL_LAYERS) * len(STATISTICS)
FLOAT32_MIN_COSINE = 0.9999  # OpenVINO float32 against Keras, per image, to share the float32 detail space

__all__ = ["DETAIL_DIM", "DETAIL_LAYERS", "DETAIL_VERSION", "detail_fingerprint", "detail_model"]


def detail_fingerprint(pooled_fp: dict) -> dict:
    """The ``detail`` set's fingerprint for the network of ``pooled_fp`` (weights, precision, quantization).

    The pooled geometry (whole image resized) does not apply: the tiles, their placement and the
    decoder that produces them replace it.
    """
    fp = {k: v for k, v in pooled_fp.items() if k not in ("pooling", "feature_dim", "geometry", "input_size")}
    if "quantization" in fp:  # the detail network is quantized on its own calibration tiles
        fp["quantization"] = {**fp["quantization"], "calibration": tiling.CALIBRATION}
    fp.update({
        "feature_set": "detail",
        "detail_layers": list(DETAIL_LAYERS),
        "detail_statistics": list(STATISTICS),
        "detail_version": DETAIL_VERSION,
        "tiles": tiling.recipe(),
        "pooling": "per-channel " + " and ".join(STATISTICS) + " over each tile's positions, averaged over tiles",
        "feature_dim": DETAIL_DIM,
    })
    return fp


def detail_model(weights: Weights, tile: int = tiling.TILE):
    """The truncated Keras ResNet50: preprocessed float ``(n, tile, tile, 3)`` → float32 ``(n, DETAIL_DIM)`` per tile."""
    import keras
    from keras import ops

    from stylesift.featurizer.backbones.style import channel_stats

    resnet = keras.applications.ResNet50(weights=None, include_top=False, input_shape=(tile, tile, 3))
    resnet.load_weights(str(weights.notop))
    parts = [channel_stats(resnet.get_layer(name).output) for name in DETAIL_LAYERS]
    out = ops.concatenate(parts, axis=-1) if len(parts) > 1 else parts[0]
    return keras.Model(resnet.input, out, name="stylesift_detail")
