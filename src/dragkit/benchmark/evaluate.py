"""Evaluating finished benchmark runs, sample by sample: every metric ``dragkit bench report --metrics`` offers.

- ``md`` Mean Distance and ``m-md`` its masked variant (DIFT; one feature pass serves both), ``if`` Image Fidelity
  and ``if-bg`` its background-only variant (LPIPS-Alex), ``dai`` (stored by the run), ``gscore`` (a judge endpoint),
  ``drag-back`` (a second edit per sample, on the run's method, config, seed and model or ``--model``).
- Randomness is seeded per sample from a stable hash of its id (:mod:`dragkit.metrics.seeds`), never the order the
  samples are listed in; ``repeats`` > 1 evaluates DIFT and the judge that many times with seeds 0…N−1 of that hash,
  and the report gives mean ± std over the repeats (:func:`dragkit.benchmark.report.aggregate`). DIFT gives the
  original and the edited image independent noise (seeds ``dift-original`` and ``dift-edited``), as the official
  evaluator: shared noise would bias MD toward "did not move".
- The editable region of a sample (m-MD, if-bg, drag-back) is the run's ``mask.png`` next to its result, or for runs
  written before it existed, the dataset's mask re-read (and resized as the run was).
"""

from __future__ import annotations

import functools
import json
import logging
import random
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
from PIL import Image

from ..config import METHODS, config_fields, config_to_dict
from ..images import pixels_sha256
from ..io import load_image, load_mask, save_image_atomic, save_json_atomic
from ..metrics.seeds import SEED_RULE, dift_seeds, sample_seed
from ..types import DragError, DragRequest
from .rundir import RUN_META
from .runner import ERROR, RESULT

logger = logging.getLogger(__name__)

METRICS = ("md", "if", "dai", "gscore", "m-md", "if-bg", "drag-back")
DEFAULT_METRICS = ("md", "if", "dai")
DIFT_METRICS = ("md", "m-md")
DRAG_BACK_IMAGE, DRAG_BACK_RECORD = "drag_back.png", "drag_back.json"


@dataclass
class Run:
    """A finished (or partial) run directory: its meta data, the successful sample records and the failures."""

    path: Path
    meta: dict
    results: list[dict]
    failed: list[str]

    @property
    def label(self) -> str:
        return self.path.name


def load_run(path: str | Path) -> Run:
    path = Path(path)
    meta_file = path / RUN_META
    if not meta_file.is_file():
        raise DragError(f"{path}: not a benchmark run (no {RUN_META})")
    meta = json.loads(meta_file.read_text())
    results = []
    for f in sorted(path.rglob(RESULT)):
        record = json.loads(f.read_text())
        record["_dir"], record["_run"] = f.parent, meta
        results.append(record)
    failed = sorted(f.parent.relative_to(path).as_posix() for f in path.rglob(ERROR)
                    if not (f.parent / RESULT).exists())
    if not results:
        raise DragError(f"{path}: no finished samples")
    return Run(path, meta, results, failed)


@dataclass
class Evaluators:
    """What the requested metrics need; each is created on first use (models load once per report).

    ``repeats``: evaluations of DIFT and the judge per sample (seeds 0…N−1 of the sample's hash).
    ``editor_factory(model)``: a DragEditor for drag-back (one per model); ``drag_back_model`` overrides the model each
    run recorded."""

    metrics: tuple[str, ...]
    dift_factory: Optional[Callable[[], object]] = None
    lpips_factory: Optional[Callable[[], object]] = None
    judge_factory: Optional[Callable[[], object]] = None
    judge_repeats: int = 10
    repeats: int = 1
    editor_factory: Optional[Callable[[str], object]] = None
    drag_back_model: Optional[str] = None
    _made: dict = field(default_factory=dict)
    _source_features: dict = field(default_factory=dict)
    _editors: dict = field(default_factory=dict)

    def get(self, name: str):
        """The model of ``name``: "md" the DIFT featurizer, "if" LPIPS, "gscore" the judge client."""
        if name not in self._made:
            factory = {"md": self.dift_factory, "if": self.lpips_factory, "gscore": self.judge_factory}[name]
            if factory is None:
                raise DragError(f"metric {name!r} needs a model that was not configured")
            self._made[name] = factory()
        return self._made[name]

    def editor(self, model: str):
        """The editor that drags samples back, loaded once per model."""
        if self.editor_factory is None:
            raise DragError("drag-back needs an editor: pass --model (default: the model each run recorded)")
        if model not in self._editors:
            self._editors[model] = self.editor_factory(model)
        return self._editors[model]

    def drag_back_model_of(self, run_meta: dict) -> str:
        model = self.drag_back_model or run_meta.get("model")
        if not model:
            raise DragError("drag-back: the run records no model; pass --model")
        return model

    def source_features(self, image: Image.Image, prompt: str, seed: int):
        """DIFT features of an original image (``seed``: its own, ``dift-original``), computed once for all runs of the
        sample being evaluated."""
        key = (pixels_sha256(image), prompt, seed)
        if key not in self._source_features:
            self._source_features[key] = self.get("md").features(image, prompt, seed=seed)
        return self._source_features[key]

    def next_sample(self) -> None:
        """Forget cached source features (runs are evaluated sample by sample, so memory stays flat)."""
        self._source_features.clear()

    def describe(self) -> dict:
        """What the report records of the evaluation: metrics, repeats, the seed rule, the models used."""
        info: dict = {"metrics": list(self.metrics), "repeats": self.repeats, "seed_rule": SEED_RULE}
        if "md" in self._made and hasattr(self._made["md"], "describe"):
            info["dift"] = self._made["md"].describe()
        if "gscore" in self._made:
            info["judge"] = {"model": getattr(self._made["gscore"], "model", None), "asks": self.judge_repeats}
        if self._editors:
            info["drag_back_models"] = sorted(self._editors)
        return info


# --- one sample ------------------------------------------------------------------------------------------------------

@dataclass
class Sample:
    """One finished sample as the metrics see it: the original, the edited image (at the original's size), the
    request's points and prompt, the editable region and the run it belongs to."""

    record: dict
    original: Image.Image
    edited: Image.Image

    @property
    def sid(self) -> str:
        return self.record["sample_id"]

    @property
    def request(self) -> dict:
        return self.record["request"]

    @property
    def prompt(self) -> str:
        return self.request.get("prompt", "")

    @property
    def run(self) -> dict:
        return self.record.get("_run") or {}

    @property
    def size_hw(self) -> tuple[int, int]:
        return self.original.size[1], self.original.size[0]

    @functools.cached_property
    def mask(self) -> Optional[np.ndarray]:
        """H×W uint8 editable region (1 = editable); None = the whole image (no mask, or none can be found)."""
        return sample_mask(self.record, self.original.size)


def open_sample(record: dict) -> Sample:
    sample_dir = record["_dir"]
    original = load_image(sample_dir / record["request"]["image"])
    edited = load_image(sample_dir / "dragged_image.png")
    if edited.size != original.size:  # as the reference: the edited image is bilinearly resized to the source
        edited = edited.resize(original.size, Image.BILINEAR)
    return Sample(record, original, edited)


def sample_mask(record: dict, size: tuple[int, int]) -> Optional[np.ndarray]:
    """The editable region of a finished sample: ``mask.png`` recorded by the runner, else the dataset's mask (runs
    written before masks were kept), resized as the run was; None when the sample has none or it cannot be read."""
    mask = None
    if record["request"].get("mask"):
        mask = load_mask(record["_dir"] / record["request"]["mask"])
    else:
        meta = record.get("_run") or {}
        try:
            from ..datasets import read_sample, resize_request

            request = read_sample(meta["dataset"], meta["data"], record["sample_id"]).request
            mask = (resize_request(request, meta["resize"]) if meta.get("resize") else request).mask
        except (KeyError, TypeError, OSError, DragError) as exc:
            logger.warning("%s: no editable region found (%s): the whole image counts", record["sample_id"], exc)
    if mask is not None and mask.shape != (size[1], size[0]):
        raise DragError(f"{record['sample_id']}: mask is {mask.shape[1]}x{mask.shape[0]}, image {size[0]}x{size[1]}")
    return mask


def evaluate_sample(record: dict, ev: Evaluators) -> dict:
    """Metric values of one finished sample: {"md_distances": [...], "if": …, "dai_1": …, "gscore_like": …, "seeds":
    {…}} (``*_by_repeat`` beside MD, m-MD and the judge when ``ev.repeats`` > 1)."""
    from ..metrics.dai import dai_all

    s = open_sample(record)
    out: dict = {}
    seeds: dict = {}
    if any(m in ev.metrics for m in DIFT_METRICS):
        out.update(dift_values(s, ev, seeds))
    if "if" in ev.metrics:
        from ..metrics.lpips import image_fidelity

        out["if"] = image_fidelity(ev.get("if"), s.original, s.edited)
    if "if-bg" in ev.metrics:
        from ..metrics.lpips import background_fidelity

        out["if_bg"] = None if s.mask is None else background_fidelity(ev.get("if"), s.original, s.edited, s.mask)
    if "dai" in ev.metrics:
        stored = {k: v for k, v in record.get("metrics", {}).items() if k.startswith("dai_")}
        out.update(stored or dai_all(s.original, s.edited, s.request["handles"], s.request["targets"]))
    if "gscore" in ev.metrics:
        out.update(judge_values(s, ev, seeds))
    if "drag-back" in ev.metrics:
        out["drag_back"] = drag_back_value(s, ev, seeds)
    if seeds:
        out["seeds"] = seeds
    return out


def _with_repeats(key: str, per_repeat: list, mean) -> dict:
    """{key: mean(per_repeat)} and, for more than one repeat, {key_by_repeat: per_repeat}."""
    out = {key: mean(per_repeat)}
    if len(per_repeat) > 1:
        out[f"{key}_by_repeat"] = per_repeat
    return out


def dift_values(s: Sample, ev: Evaluators, seeds: dict) -> dict:
    """MD and/or m-MD point distances, per pair averaged over the repeats (one DIFT pass serves both). Repeat r
    featurizes the original with seed ``dift_seeds(sid, r)[0]`` and the edited image with ``[1]``: independent noise,
    recorded as ``seeds["dift_original"]`` and ``seeds["dift_edited"]``."""
    from ..metrics.mean_distance import point_distances

    dift = ev.get("md")
    pairs = [dift_seeds(s.sid, r) for r in range(ev.repeats)]
    seeds["dift_original"], seeds["dift_edited"] = [p[0] for p in pairs], [p[1] for p in pairs]
    handles, targets = s.request["handles"], s.request["targets"]
    by: dict[str, list] = {"md": [], "m_md": []}
    for original_seed, edited_seed in pairs:  # independent noise for the two images (metrics.seeds)
        src = ev.source_features(s.original, s.prompt, original_seed)
        dst = dift.features(s.edited, s.prompt, seed=edited_seed)
        if "md" in ev.metrics:
            by["md"].append(point_distances(src, dst, handles, targets, s.size_hw))
        if "m-md" in ev.metrics:
            by["m_md"].append(point_distances(src, dst, handles, targets, s.size_hw, region=s.mask))
    out: dict = {}
    for name, runs in by.items():
        if runs:
            out.update(_with_repeats(f"{name}_distances", runs,
                                     lambda rs: [statistics.fmean(pair) for pair in zip(*rs)]))
    return out


def judge_values(s: Sample, ev: Evaluators, seeds: dict) -> dict:
    """The judge's mean score of this image (all asks of all repeats), the spread of its asks (``gscore_like_std``)
    and, with repeats, each repeat's mean; the image order of repeat r is drawn from the sample's r-th judge seed."""
    judge = ev.get("gscore")
    seeds["judge"] = [sample_seed("judge", s.sid, r) for r in range(ev.repeats)]
    judged = [judge.score(s.original, s.edited, repeats=ev.judge_repeats, rng=random.Random(seed))
              for seed in seeds["judge"]]
    scores = [x for j in judged for x in j.scores]
    out = {"gscore_like": statistics.fmean(scores) if scores else None,
           "gscore_like_std": statistics.pstdev(scores) if scores else None}
    if ev.repeats > 1:
        out["gscore_like_by_repeat"] = [j.mean for j in judged]
    return out


def run_config(run_meta: dict):
    """The method config a run recorded in ``run.json`` (fields this version does not know are ignored)."""
    method = run_meta.get("method")
    if method not in METHODS:
        raise DragError(f"drag-back: the run's method {method!r} is not one of {', '.join(METHODS)}")
    known = config_fields(METHODS[method])
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in (run_meta.get("config") or {}).items()
              if k in known}
    return METHODS[method](**values)


def drag_back_value(s: Sample, ev: Evaluators, seeds: dict) -> Optional[float]:
    """1 − LPIPS(original, dragged back); the dragged-back image is kept as ``drag_back.png`` (with
    ``drag_back.json``: model, config, seed) in the sample's folder and reused while those agree."""
    from ..metrics.drag_back import drag_back, drag_back_fidelity

    model, config, seed = ev.drag_back_model_of(s.run), run_config(s.run), int(s.run.get("seed") or 0)
    seeds["drag_back"] = seed
    spec = {"model": model, "method": config.method, "config": config_to_dict(config), "seed": seed}
    image_path, record_path = s.record["_dir"] / DRAG_BACK_IMAGE, s.record["_dir"] / DRAG_BACK_RECORD
    if image_path.is_file() and record_path.is_file() and json.loads(record_path.read_text()) == spec:
        back = load_image(image_path)
    else:
        request = DragRequest(s.original, s.request["handles"], s.request["targets"], s.mask, s.prompt)
        editor = ev.editor(model)  # a model that cannot be loaded stops the report
        try:
            back = drag_back(editor, config, request, s.edited, seed=seed)
        except DragError as exc:  # this sample cannot be dragged back (the editor itself loaded): not counted
            logger.warning("%s: drag-back failed: %s", s.sid, exc)
            return None
        save_image_atomic(back, image_path)
        save_json_atomic(spec, record_path)
    return drag_back_fidelity(ev.get("if"), s.original, back)
