"""Prove that resolved weights really are ImageNet weights, with photos scikit-image ships."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stylesift.errors import StylesiftError
from stylesift.featurizer.backbones import preprocess
from stylesift.featurizer.images import load_image
from stylesift.featurizer.weights.sources import Weights

# ImageNet class indices are fixed by the dataset; only the few the check needs are named here.
CLASS_NAMES = {281: "tabby", 282: "tiger cat", 285: "Egyptian cat", 967: "espresso", 968: "cup"}
# photo -> (acceptable classes, within top k)
EXPECTED = {"chelsea": ({281, 282, 285}, 3), "coffee": ({967}, 1)}


def check_imagenet(weights: Weights) -> dict:
    """Classify scikit-image's ``chelsea`` (a cat) and ``coffee`` photos with the 1000-class head.

    Returns ``{photo: {"ok": bool, "top3": [(class name, probability), ...]}}``.
    """
    import keras

    from stylesift.extras import require

    require("skimage", "demo", "checking the weights on scikit-image's sample photos")
    import skimage.data

    if weights.top is None:
        raise StylesiftError(f"{weights.notop}: these weights have no classifier head, so they cannot be checked; "
                         "give a weights file with the top (include_top=True)")
    model = keras.applications.ResNet50(weights=None, include_top=True)
    model.load_weights(str(weights.top))
    folder = Path(skimage.data.__file__).parent
    batch = np.stack([load_image(folder / f"{name}.png") for name in EXPECTED])
    probs = np.asarray(model.predict_on_batch(preprocess(batch)))
    result = {}
    for (name, (accepted, k)), p in zip(EXPECTED.items(), probs):
        order = np.argsort(-p)
        result[name] = {
            "ok": bool(set(order[:k].tolist()) & accepted),
            "top3": [(CLASS_NAMES.get(int(c), f"class {int(c)}"), float(p[c])) for c in order[:3]],
        }
    return result
