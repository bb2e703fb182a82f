"""The contact sheet: one self-contained HTML file a content team can open or mail anywhere.

Sections, top to bottom: a summary (scored, selected, failed; model method and threshold), the
selected images sorted by score, a band of borderline images just below the cut, and the files that
could not be read with the reason. Each selected image can show its nearest positive training
example from the feature store, as evidence of why it was picked. Thumbnails are small JPEGs
embedded as ``data:`` URIs, so the file has no outside references at all. With ``crop_px`` (the score
run's sheet asks for :data:`CROP_PX`) each card also holds a 1:1 centre crop of its original, opened by
a click (``<details>``, no script), so a person can judge noise, focus and compression.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from stylesift.atomic import atomic_write
from stylesift.featurizer.images import load_crop, load_preview

THUMB_PX = 180  # longest side of a thumbnail, in CSS pixels
EVIDENCE_PX = 72
MAX_DUPLICATE_THUMBS = 6  # near-duplicates shown small behind a group's card; the rest are counted
MAX_SELECTED = 600  # beyond this the page gets too heavy to mail; the CSV has every row
# A card's 1:1 crop: 256 px shows grain and focus and weighs 20-55 KB (JPEG quality 90, chroma not
# subsampled so colour noise survives), so a sheet of 600 picks stays within tens of megabytes.
CROP_PX = 256
CROP_QUALITY = 90


@dataclass
class Evidence:
    """The nearest positive training example of one selected image (cosine similarity in feature space)."""

    path: str | None
    sha256: str
    similarity: float


@dataclass
class ReportSummary:
    """What the report shows; returned so callers can print where it went and what it holds."""

    path: Path
    scored: int
    selected: int
    failed: int
    borderline: int
    shown_selected: int
    evidence: int
    bytes: int = 0
    seconds: float = 0.0
    missing_previews: list[str] = field(default_factory=list)
    crops: int = 0  # cards holding a 1:1 crop


def thumbnail_data_uri(path: str | os.PathLike, size: int = THUMB_PX, quality: int = 82,
                       sha256: str | None = None) -> str:
    """A JPEG ``data:`` URI of the image at ``path`` fitted into ``size × size`` pixels (aspect kept).

    Decoded by the bounded decoder (:func:`~stylesift.featurizer.images.load_preview`: the formats
    ``extract`` accepts, the decode memory budget); with ``sha256`` the file must still hold that
    content. Raises :class:`~stylesift.featurizer.images.ImageError` (a ``ValueError``) when the file
    cannot be shown; callers show a placeholder then, since a file may have been moved since it was scored.
    """
    return _data_uri(_jpeg(load_preview(path, size, sha256=sha256), quality))


def crop_jpeg(path: str | os.PathLike, size: int = CROP_PX, *, sha256: str | None = None,
              quality: int = CROP_QUALITY) -> bytes:
    """JPEG bytes of the centre ``size × size`` pixels of the image at ``path``, at native resolution.

    Parameters
    ----------
    path : path
        The image file.
    size : int
        Side of the crop; a side of the image shorter than that is taken whole.
    sha256 : str, optional
        The content that was scored: a file holding anything else raises
        :class:`~stylesift.featurizer.images.ImageError`.
    quality : int
        JPEG quality; chroma is not subsampled, so colour noise is shown as it is.

    Returns
    -------
    bytes
        The JPEG, decoded by :func:`~stylesift.featurizer.images.load_crop` (the bounded decoder
        and its memory budget).
    """
    return _jpeg(load_crop(path, size, sha256=sha256), quality, subsampling=0)


def nearest_positives(store, sha256s: Sequence[str], positive_sha256: Sequence[str]) -> dict[str, Evidence]:
    """For each of ``sha256s`` found in ``store``, the most similar row among ``positive_sha256``.

    Similarity is the cosine of the pooled ResNet50 features, shape ``(2048,)`` per image, which is
    model-agnostic: it says which training photo this image resembles, whatever the classifier.
    An image never counts as its own evidence. Returns ``{sha256: Evidence}`` (missing ids skipped).
    """
    rows = [store.row_of(s) for s in sha256s]
    pos_rows = [store.row_of(s) for s in dict.fromkeys(positive_sha256)]
    pos_rows = np.array([r for r in pos_rows if r is not None], dtype=np.int64)
    query = [(s, r) for s, r in zip(sha256s, rows) if r is not None]
    if not len(pos_rows) or not query:
        return {}
    pos = _unit(store.features(pos_rows))
    q = _unit(store.features(np.array([r for _, r in query], dtype=np.int64)))
    sim = q @ pos.T  # (n_query, n_positive)
    for i, (_, r) in enumerate(query):
        sim[i, pos_rows == r] = -np.inf  # an image is not evidence for itself
    best = sim.argmax(axis=1)
    out = {}
    for i, (sha, _) in enumerate(query):
        j = int(best[i])
        if not np.isfinite(sim[i, j]):
            continue
        row = int(pos_rows[j])
        paths = store.paths(row)
        path = next((p for p in paths if os.path.exists(p)), paths[0] if paths else None)
        out[sha] = Evidence(path, store.sha256[row], float(sim[i, j]))
    return out


def write_report(out: str | os.PathLike, rows: Iterable[Mapping], *, failures: Iterable[Mapping] = (),
                 method: str = "", threshold: float | None = None, model: str | os.PathLike | None = None,
                 store=None, positive_sha256: Sequence[str] = (), borderline: int = 12,
                 max_selected: int = MAX_SELECTED, title: str = "stylesift picks", workers: int | None = None,
                 extra: Mapping[str, str] | None = None, crop_px: int = 0) -> ReportSummary:
    """Write the contact sheet to ``out`` and return what it holds.

    Parameters
    ----------
    out : path
        The HTML file to write (its folder is created).
    rows : iterable of mappings
        Scored images: ``path``, ``sha256``, ``score`` (higher = more like the positives) and
        ``selected`` (bool), as :class:`stylesift.classifiers.predict.Predictor` returns them. A row with an
        ``error`` (and no score) counts as a failure.
    failures : iterable of mappings
        Files that could not be read: ``path`` and ``error`` (or ``reason``).
    method, threshold, model : optional
        Shown in the summary.
    store : FeatureStore, optional
        With ``positive_sha256`` (the training positives' ids from the bundle), each selected image
        shows its nearest positive training example.
    borderline : int
        How many of the best-scoring unselected images to show below the cut.
    max_selected : int
        At most this many selected images get a thumbnail; the rest are counted in the summary.
    extra : mapping, optional
        More ``name: value`` lines for the summary (e.g. the selection rule).
    crop_px : int
        Side of the 1:1 centre crop each card of the selected and borderline sections opens on a
        click; 0 (the default) for none. A crop weighs several thumbnails, so the sheet gets several
        times heavier: :func:`write_score_report` asks for :data:`CROP_PX`. A row's file that no
        longer holds its ``sha256`` gets a "no 1:1 crop" placeholder. Crops are decoded at most
        ``workers`` at a time, each within the decode memory budget, and written into the file as
        they come, so no more than a few are held at once.
    """
    started = time.perf_counter()
    out = Path(out)
    scored, failed = [], [dict(f) for f in failures]
    for row in rows:
        row = dict(row)
        if row.get("error") or row.get("score") is None or _isnan(row.get("score")):
            failed.append(row)
        else:
            scored.append(row)
    scored.sort(key=lambda r: (-float(r["score"]), str(r["path"])))
    leaders, dups = _collapse_groups(scored)
    selected = [r for r in leaders if r.get("selected")]
    band = [r for r in leaders if not r.get("selected")][: max(0, borderline)]
    shown = selected[:max_selected]

    evidence = {}
    if store is not None and len(positive_sha256) and shown:
        evidence = nearest_positives(store, [r["sha256"] for r in shown if r.get("sha256")], positive_sha256)

    wanted = {str(r["path"]): THUMB_PX for r in shown + band}
    for r in shown + band:
        for d in dups.get(r.get("group"), [])[:MAX_DUPLICATE_THUMBS]:
            wanted.setdefault(str(d["path"]), EVIDENCE_PX)
    for ev in evidence.values():
        if ev.path:
            wanted.setdefault(ev.path, EVIDENCE_PX)
    thumbs = _thumbnails(wanted, workers)

    summary = ReportSummary(out, scored=len(scored), selected=len(selected), failed=len(failed),
                            borderline=len(band), shown_selected=len(shown), evidence=len(evidence))
    summary.missing_previews = [p for p in wanted if isinstance(thumbs.get(p), Exception)]
    # In card order (the selected, then the borderline band), decoded while the page is written.
    crops = _in_order(_crop_maker(crop_px), shown + band, workers) if crop_px > 0 else None
    parts = _page(title=title, summary=summary, method=method, threshold=threshold, model=model,
                  extra=extra or {}, shown=shown, band=band, failed=failed, thumbs=thumbs, evidence=evidence,
                  dups=dups, crops=crops)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(out, "w", encoding="utf-8") as fh:  # a half-written report never replaces a good one
        for part in parts:
            fh.write(part)
    summary.bytes = out.stat().st_size
    summary.seconds = time.perf_counter() - started
    return summary


def write_score_report(out: str | os.PathLike, result, bundle, store, *, model: str | os.PathLike | None = None,
                       **kwargs) -> ReportSummary:
    """The contact sheet of one scoring run: ``result`` from :meth:`stylesift.classifiers.predict.Predictor.score`.

    ``bundle`` gives the method, threshold and the training positives' store ids, ``store`` (the
    scoring store, a path) their features and files for the evidence column. ``kwargs`` go to
    :func:`write_report`.
    """
    from stylesift.featurizer.store import FeatureStore

    positives = np.asarray(bundle.train_sha256)[np.asarray(bundle.train_labels) == bundle.positive_label]
    st = FeatureStore(store) if len(positives) and Path(store).exists() else None
    rule = result.selection or {}
    if rule.get("rule") == "threshold":
        threshold, how = rule["threshold"], f"score ≥ {rule['threshold']:.4g}"
    else:
        threshold, how = bundle.threshold, f"top {rule.get('k')}" + (
            f" ({rule['fraction']:.1%})" if rule.get("rule") == "top_fraction" else "")
    labels = f"{bundle.positive_label} vs {bundle.negative_label}" if bundle.negative_label else f"{bundle.positive_label} only"
    extra = {"selection": how, "trained on": f"{labels} ({len(positives)} positives)", **kwargs.pop("extra", {})}
    kwargs.setdefault("crop_px", CROP_PX)  # the sheet people judge picks on shows them at 1:1
    return write_report(out, result.rows, failures=result.failed, method=bundle.method, threshold=threshold,
                        model=model, store=st, positive_sha256=positives, extra=extra, **kwargs)


# ----------------------------------------------------------------------------- internals
def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _isnan(value) -> bool:
    try:
        return math.isnan(float(value))
    except (TypeError, ValueError):
        return True


def _thumbnails(wanted: Mapping[str, int], workers: int | None) -> dict[str, str | Exception]:
    def one(item):
        path, size = item
        try:
            return path, thumbnail_data_uri(path, size * 2 if size <= EVIDENCE_PX else size)
        except Exception as exc:  # noqa: BLE001 - any unreadable file becomes a placeholder
            return path, exc

    with ThreadPoolExecutor(_workers(workers)) as pool:
        return dict(pool.map(one, wanted.items()))


def _workers(workers: int | None) -> int:
    return workers or min(8, os.cpu_count() or 1)


def _jpeg(picture, quality: int, **options) -> bytes:
    buf = io.BytesIO()
    picture.save(buf, "JPEG", quality=quality, **options)
    return buf.getvalue()


def _data_uri(jpeg: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


def _crop_maker(size: int) -> Callable[[Mapping], str | Exception]:
    """``row -> data: URI`` of its 1:1 crop (the exception when the file cannot be shown, as for thumbnails)."""
    def one(row):
        try:
            return _data_uri(crop_jpeg(row["path"], size, sha256=row.get("sha256") or None))
        except Exception as exc:  # noqa: BLE001 - any unreadable file becomes a placeholder
            return exc

    return one


def _in_order(fn, items: Sequence, workers: int | None) -> Iterator:
    """``fn(item)`` for each item, in order, computed on ``workers`` threads with at most that many results waiting.

    Unlike ``Executor.map`` (which starts every call at once and keeps every result until it is
    read) this holds a bounded window, so a sheet of 600 crops never has them all in memory.
    """
    size = _workers(workers)
    with ThreadPoolExecutor(size) as pool:
        window = deque()
        for item in items:
            window.append(pool.submit(fn, item))
            if len(window) > size:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()


def _e(value) -> str:
    # File names that are not UTF-8 arrive as surrogate escapes: shown with replacement characters.
    return html.escape(str(value).encode("utf-8", "surrogateescape").decode("utf-8", "replace"), quote=True)


def _name(path) -> str:
    return os.path.basename(str(path)) or str(path)


def _img(thumbs, path, alt: str, cls: str = "") -> str:
    uri = thumbs.get(str(path))
    if isinstance(uri, str):
        return f'<img src="{uri}" alt="{_e(alt)}" class="{cls}" loading="eager">'
    reason = f"no preview: {uri}" if isinstance(uri, Exception) else "no preview"
    return f'<div class="noimg {cls}" title="{_e(reason)}">no preview</div>'


def _collapse_groups(scored: list[dict]) -> tuple[list[dict], dict]:
    """Rows (best first) reduced to one per near-duplicate group, and each group's other rows.

    Rows without a ``group`` (scored without ``--dedupe``) are their own group.
    """
    leaders, dups, seen = [], {}, set()
    for r in scored:
        g = r.get("group")
        if g is None or g not in seen:
            seen.add(g)
            leaders.append(r)
        else:
            dups.setdefault(g, []).append(r)
    return leaders, dups


def _dups_html(row, thumbs, dups) -> str:
    others = dups.get(row.get("group"), []) if row.get("group") is not None else []
    if not others:
        return ""
    pics = "".join(f'<span class="dup" title="{_e(d["path"])}">{_img(thumbs, d["path"], _name(d["path"]), "ev")}'
                   f'<small>{float(d["score"]):.3f}</small></span>' for d in others[:MAX_DUPLICATE_THUMBS])
    more = f'<span class="more">+{len(others) - MAX_DUPLICATE_THUMBS} more</span>' if len(others) > MAX_DUPLICATE_THUMBS else ""
    return (f'<details class="dups"><summary>group of {len(others) + 1}: {len(others)} near-duplicate'
            f'{"" if len(others) == 1 else "s"} behind this card</summary><div>{pics}{more}</div></details>')


def _crop_html(crop, path) -> str:
    """The card's 1:1 control: a ``<details>`` whose image the browser decodes only once it is opened."""
    if crop is None:
        return ""
    if isinstance(crop, Exception):
        body = f'<div class="nocrop" title="{_e(f"no crop: {crop}")}">no 1:1 crop</div>'
    else:
        body = f'<img src="{crop}" alt="{_e("1:1 centre crop of " + _name(path))}" class="crop" loading="lazy">'
    return (f'<details class="crop"><summary title="the centre of the original at its own resolution">1:1</summary>'
            f'{body}</details>')


def _card(row, rank, thumbs, evidence, kind, dups=None, crop=None) -> str:
    path = str(row["path"])
    ev = evidence.get(row.get("sha256") or "")
    ev_html = ""
    if ev is not None:
        ev_html = (f'<div class="evidence" title="{_e(ev.path or ev.sha256)}">'
                   f'{_img(thumbs, ev.path, "nearest training positive " + _name(ev.path or ev.sha256), "ev")}'
                   f'<span>nearest positive<br><b>{_e(_name(ev.path or ev.sha256[:12]))}</b><br>'
                   f'similarity {ev.similarity:.2f}</span></div>')
    return (f'<figure class="card {kind}">{_img(thumbs, path, _name(path))}{_crop_html(crop, path)}'
            f'<figcaption><span class="rank">#{rank}</span> <span class="score">{float(row["score"]):.3f}</span>'
            f'<span class="name" title="{_e(path)}">{_e(_name(path))}</span></figcaption>{ev_html}'
            f'{_dups_html(row, thumbs, dups or {})}</figure>')


def _page(*, title, summary, method, threshold, model, extra, shown, band, failed, thumbs, evidence, dups=None,
          crops: Iterator | None = None) -> Iterator[str]:
    """The page in pieces, for writing as they come; ``crops`` yields each card's crop in card order (counted in ``summary``)."""
    facts = [("scored", summary.scored), ("selected", summary.selected), ("failed", summary.failed)]
    info = [("method", method or "?"),
            ("threshold", "—" if threshold is None else f"{float(threshold):.4g}"),
            *([("model", model)] if model else []), *extra.items(),
            ("written", time.strftime("%Y-%m-%d %H:%M %Z"))]
    stat_html = "".join(f'<div class="stat {k}"><b>{v}</b><span>{k}</span></div>' for k, v in facts)
    info_html = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in info)

    crops = iter(crops) if crops is not None else None

    def cards(rows, first_rank, shown_evidence, kind):
        for i, r in enumerate(rows):
            crop = next(crops) if crops is not None else None
            summary.crops += isinstance(crop, str)
            yield _card(r, first_rank + i, thumbs, shown_evidence, kind, dups, crop)

    # The last "{body}" is the template's own: a title or a summary value may hold one too, always earlier.
    head, _, tail = _TEMPLATE.format(title=_e(title), stats=stat_html, info=info_html).rpartition("{body}")
    yield head
    yield (f'<section id="selected"><h2>Selected <small>{summary.selected} image'
           f'{"" if summary.selected == 1 else "s"}, best first</small></h2>')
    if shown:
        yield '<div class="grid">'
        yield from cards(shown, 1, evidence, "sel")
        yield "</div>"
    else:
        yield '<p class="empty">Nothing scored above the threshold.</p>'
    if summary.selected > len(shown):
        yield (f'<p class="more">… and {summary.selected - len(shown)} more selected images, '
               "not shown to keep this page small (see the scores CSV).</p>")
    yield "</section>"
    if band:
        yield ('<section id="borderline"><h2>Borderline <small>the best-scoring images just below the cut'
               '</small></h2><div class="grid">')
        yield from cards(band, summary.selected + 1, {}, "near")
        yield "</div></section>"
    if failed:
        rows_html = "".join(f'<tr><td title="{_e(f.get("path", ""))}">{_e(_name(f.get("path", "")))}</td>'
                            f'<td>{_e(_reason(f))}</td></tr>' for f in failed)
        yield (f'<section id="failed"><h2>Could not be read <small>{len(failed)} file'
               f'{"" if len(failed) == 1 else "s"}</small></h2>'
               f"<table><thead><tr><th>file</th><th>reason</th></tr></thead><tbody>{rows_html}</tbody></table></section>")
    yield tail


def _reason(failure: Mapping) -> str:
    reason = str(failure.get("error") or failure.get("reason") or "unknown error")
    # Featurizer errors start with the path, which the row already shows.
    prefix = f"{failure.get('path', '')}: "
    return reason[len(prefix):] if prefix != ": " and reason.startswith(prefix) else reason


_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
:root {{ --fg:#1d2330; --muted:#5f6b7a; --line:#dde2e8; --sel:#1b7f4b; --near:#b26a00; --bad:#b3261e; }}
* {{ box-sizing: border-box; }}
body {{ margin:0; font:14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color:var(--fg); background:#f5f6f8; }}
header {{ background:#fff; border-bottom:1px solid var(--line); padding:16px 24px; display:flex; flex-wrap:wrap; gap:24px; align-items:center; }}
h1 {{ font-size:20px; margin:0 24px 0 0; }}
.stat {{ display:flex; flex-direction:column; align-items:center; min-width:72px; }}
.stat b {{ font-size:26px; }} .stat span {{ color:var(--muted); font-size:12px; text-transform:uppercase; letter-spacing:.05em; }}
.stat.selected b {{ color:var(--sel); }} .stat.failed b {{ color:var(--bad); }}
dl {{ display:grid; grid-template-columns:auto auto; gap:2px 10px; margin:0; font-size:13px; }}
dt {{ color:var(--muted); }} dd {{ margin:0; overflow-wrap:anywhere; }}
section {{ padding:8px 24px 16px; }}
h2 {{ font-size:17px; margin:16px 0 10px; }} h2 small {{ font-weight:normal; color:var(--muted); font-size:13px; margin-left:6px; }}
.grid {{ display:grid; grid-template-columns:repeat(auto-fill, minmax(196px, 1fr)); gap:12px; }}
.card {{ margin:0; background:#fff; border:1px solid var(--line); border-top:4px solid var(--sel); border-radius:6px; padding:8px; }}
.card.near {{ border-top-color:var(--near); background:#fffaf2; }}
.card > img, .card > .noimg {{ display:block; width:100%; height:{thumb}px; object-fit:contain; background:#eef0f3; border-radius:3px; }}
.card > .noimg, .noimg {{ display:flex; align-items:center; justify-content:center; color:var(--muted); }}
figcaption {{ margin-top:6px; display:flex; flex-wrap:wrap; gap:4px 8px; align-items:baseline; }}
.rank {{ color:var(--muted); font-size:12px; }} .score {{ font-weight:600; font-variant-numeric:tabular-nums; }}
.name {{ flex-basis:100%; font-size:12px; overflow:hidden; text-overflow:ellipsis; white-space:nowrap; }}
.evidence {{ display:flex; gap:8px; align-items:center; margin-top:6px; padding-top:6px; border-top:1px dashed var(--line); font-size:11px; color:var(--muted); }}
.evidence img.ev, .evidence .noimg.ev {{ width:{ev}px; height:{ev}px; object-fit:cover; border-radius:4px; flex:none; }}
.evidence b {{ color:var(--fg); font-weight:500; overflow-wrap:anywhere; }}
table {{ border-collapse:collapse; background:#fff; border:1px solid var(--line); width:100%; }}
th, td {{ text-align:left; padding:6px 10px; border-bottom:1px solid var(--line); vertical-align:top; }}
td:first-child {{ white-space:nowrap; }} td:last-child {{ color:var(--bad); }}
.empty, .more {{ color:var(--muted); }}
.dups {{ margin-top:6px; padding-top:6px; border-top:1px dashed var(--line); font-size:11px; color:var(--muted); }}
.dups > div {{ display:flex; flex-wrap:wrap; gap:6px; margin-top:6px; }}
.dup {{ display:flex; flex-direction:column; align-items:center; }}
.dup img.ev, .dup .noimg.ev {{ width:{ev}px; height:{ev}px; object-fit:cover; border-radius:4px; }}
details.crop {{ margin-top:4px; font-size:12px; color:var(--muted); }}
details.crop > summary {{ cursor:pointer; width:max-content; }}
details.crop img.crop {{ display:block; margin-top:4px; max-width:none; image-rendering:pixelated; border-radius:3px; }}
/* an opened crop is shown at its own size beside the thumbnail: the card takes the whole row */
.card:has(> details.crop[open]) {{ grid-column:1 / -1; display:flex; flex-wrap:wrap; align-items:flex-start; column-gap:12px; }}
.card:has(> details.crop[open]) > img, .card:has(> details.crop[open]) > .noimg {{ width:{thumb}px; }}
.card:has(> details.crop[open]) > :not(img, .noimg, details.crop) {{ flex-basis:100%; }}
.card:has(> details.crop[open]) > details.crop {{ margin-top:0; }}
</style></head>
<body><header><h1>{title}</h1>{stats}<dl>{info}</dl></header>
<main>{{body}}</main></body></html>
""".replace("{thumb}", str(THUMB_PX)).replace("{ev}", str(EVIDENCE_PX))
