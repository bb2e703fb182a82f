"""``stylesift serve``: score uploads over HTTP, the model kept warm, many small requests batched together.

The app that receives uploads calls ``POST /score`` with one or many images (multipart field
``files``) and gets one ``{"filename", "sha256", "score", "selected", ...}`` per image, the row
``stylesift score --json`` prints for that file. What the service guarantees (docs/serve.md):

- **Safe by default**: loopback unless ``--host`` says otherwise; ``Authorization: Bearer TOKEN`` on
  every request but ``/health``; bodies, image counts and decode memory bounded (413); load beyond
  the batch queues up to ``--max-queue`` requests (then 503); a bad image fails alone; an error is one
  line of JSON, never a traceback.
- **Batches**: images of concurrent requests share network calls (:mod:`~stylesift.review.serve.batcher`).
- **Swaps without downtime**: ``POST /reload`` or ``--watch-model`` put a new model in use between
  requests; one of another feature space is refused and the old one stays
  (:mod:`~stylesift.review.serve.model_slot`).
- **Recording only when asked**: with ``--store`` new uploads become store rows, one writer, batched
  commits (:mod:`~stylesift.review.serve.recorder`); without it nothing is written anywhere.
- **Graceful stop**: SIGTERM/SIGINT let requests in flight finish and commit the store
  (:mod:`~stylesift.review.serve.server`).

From Python::

    from stylesift.review.serve import ScoringService, create_app

    service = ScoringService.open("model.ssmodel", store="features.h5")
    app = create_app(service, token="a-long-random-token")   # an ASGI app: uvicorn, or FastAPI's TestClient

The parts: :mod:`~stylesift.review.serve.app` (routes), :mod:`~stylesift.review.serve.service`
(admission, decoding, scoring), :mod:`~stylesift.review.serve.uploads` (request bodies),
:mod:`~stylesift.review.serve.auth` (tokens), :mod:`~stylesift.review.serve.server` (the process),
:mod:`~stylesift.review.serve.bench` (the load benchmark, ``stylesift bench serve``).
"""

from stylesift.review.serve.app import create_app
from stylesift.review.serve.auth import generate_token, read_token
from stylesift.review.serve.errors import ServeError
from stylesift.review.serve.model_slot import LoadedModel, ModelSlot
from stylesift.review.serve.server import bind, serve
from stylesift.review.serve.service import ScoringService, ServeSettings

__all__ = ["LoadedModel", "ModelSlot", "ScoringService", "ServeError", "ServeSettings", "bind", "create_app",
           "generate_token", "read_token", "serve"]
