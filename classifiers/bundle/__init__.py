"""The model bundle: one file holding a fitted pipeline, its threshold and everything needed to trust it.

Layout (one file, conventionally ``MODEL.ssmodel``)::

    stylesift-bundle 2\\n           magic line
    {...}\\n                        header: one line of JSON, readable without loading the model
    <skops zip>                    payload: {"pipeline", "train_sha256", "train_labels"}

The payload is a `skops <https://skops.readthedocs.io>`_ file: a zip of one JSON schema and plain
``.npy`` arrays (read with ``allow_pickle=False``). Nothing in it is a pickle, and every object it
would build is named in the schema, so :meth:`Bundle.load` reads the schema first and refuses the
file, naming the offenders, unless every type is on the allow-list
(:func:`~stylesift.classifiers.bundle.audit.allowed_types`: exactly the types the methods need) and
every node kind on :data:`~stylesift.classifiers.bundle.audit.ALLOWED_NODES`; only then does skops
build the objects, audited again against the same list. Loading a bundle therefore runs no code
chosen by the file.

The parts, one module each:

- :mod:`~stylesift.classifiers.bundle.header`: the magic line and the JSON header (checksum,
  fingerprint, versions), read and validated without the model;
- :mod:`~stylesift.classifiers.bundle.audit`: the allow-list and the checks of fitted state;
- :mod:`~stylesift.classifiers.bundle.model`: :class:`Bundle`, save and load;
- :mod:`~stylesift.classifiers.bundle.info`: what ``stylesift model info`` shows;
- :mod:`~stylesift.classifiers.bundle.v1`: format 1 (a pickle, stylesift 0.1), refused everywhere
  except :func:`upgrade`.
"""

from stylesift.classifiers.bundle.audit import ALLOWED_NODES, allowed_types, untrusted_types
from stylesift.classifiers.bundle.header import (
    EXTENSION,
    FORMAT,
    FORMAT_VERSION,
    LEGACY_MAGIC,
    MAGIC,
    UPGRADE_COMMAND,
    BundleError,
    check_fingerprint,
    check_versions_match,
    current_versions,
    precision_of,
    read_header,
    validate_header,
)
from stylesift.classifiers.bundle.info import inspect
from stylesift.classifiers.bundle.model import Bundle
from stylesift.classifiers.bundle.v1 import upgrade

__all__ = ["ALLOWED_NODES", "EXTENSION", "FORMAT", "FORMAT_VERSION", "LEGACY_MAGIC", "MAGIC", "UPGRADE_COMMAND", "Bundle",
           "BundleError", "allowed_types", "check_fingerprint", "check_versions_match", "current_versions", "inspect",
           "precision_of", "read_header", "untrusted_types", "upgrade", "validate_header"]
