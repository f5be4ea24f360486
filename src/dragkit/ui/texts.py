"""The status texts the web app shows (Markdown strings; pure functions, no Gradio).

One place for every message of the Drag tab, so that the handlers only decide *which* message, and the words stay
consistent: "**Error:** …" one-liners, "**Running** · …" progress, "**Done** …" (or "**Live re-edit** …") with what
the identity LoRA did, and the preparation line: "**Preparing** · …", "**Ready** · …".
"""

from __future__ import annotations

from typing import Any, Sequence

from ..errors import first_line
from ..types import EDIT_STAGES, DragError, DragResult, EditCancelled, ProgressEvent
from . import session as ss

START = "Upload an image to start."
NO_IMAGE = ("No image yet. If you uploaded a file, it could not be read as an image: use PNG, JPEG, WebP, BMP or "
            "TIFF.")
QUEUED = "**Queued** · waiting for the device…"
CANCELLED = "Cancelled."
NOTHING_TO_CANCEL = "Nothing to cancel."
GENERATING = "**Generating** · waiting for the device…"

STAGES = {stage: stage.label for stage in EDIT_STAGES}  # the one vocabulary: dragkit.types.Stage
LORA_CACHED = "identity LoRA reused from cache"
LORA_AND_INVERSION_REUSED = "identity LoRA and inversion reused"
INVERSION_REUSED = "no identity LoRA; inversion reused"
LORA_TRAINED = "identity LoRA trained"
NO_LORA = "no identity LoRA"
GENERATED = "generated image: dragged from its saved latents, no identity LoRA, no inversion"
# the library's no-mask notice (dragkit.checks.NO_MASK_NOTICE), in the page's words
NO_MASK = ("no mask painted: the whole image may change (backgrounds and textures drift too); paint the region that "
           "may move with the brush on the image, then Run")


def error(exc: BaseException) -> str:
    """``exc`` as a one-line "**Error:** …" status."""
    return f"**Error:** {first_line(exc)}"


def failure(exc: BaseException, what: str = "edit") -> str:
    """The one-line status of an edit (or another ``what``: "preparation", "generation") that ended with ``exc``:
    "Cancelled.", a :class:`~dragkit.types.DragError`'s own words, or "**Error:** the edit failed: RuntimeError: …"
    for an unexpected error."""
    if isinstance(exc, EditCancelled):
        return CANCELLED
    if isinstance(exc, DragError):
        return error(exc)
    return f"**Error:** the {what} failed: {first_line(exc, with_type=True)}"


def warnings_note(warnings: Sequence[str]) -> str:
    """The warnings as a paragraph to append to a status ("" when there are none)."""
    return "\n\n**Warning:** " + "; ".join(warnings) if warnings else ""


def points_status(sess: ss.Session) -> str:
    """What the session holds and what the next click does, with mask warnings and the upload notice."""
    if sess.image is None:
        return START
    w, h = sess.image.size
    pairs = len(sess.points) // 2
    parts = [f"Image {w}×{h}.", f"{pairs} drag{'s' if pairs != 1 else ''}."]
    if sess.expecting == "target":
        parts.append(f"Click the target of handle {pairs + 1}.")
    else:
        parts.append("Click a handle point." if not pairs else "Click another handle, or Run.")
    parts.append("Editable region: painted." if sess.mask is not None else
                 "Editable region: whole image (paint the part that may move with the brush, or the background "
                 "may change too).")
    text = " ".join(parts)
    warn = ss.mask_warnings(sess)
    if warn:
        text += warnings_note(warn) + " — it is held fixed; paint over it or erase the mask."
    if sess.notice:
        text += "\n\n**Note:** " + sess.notice
    return text


def starting(warnings: Sequence[str]) -> str:
    """The status while an edit waits for its first progress event."""
    return "**Running** · starting…" + warnings_note(warnings)


def progress(ev: ProgressEvent, lora_cached: bool, inversion_cached: bool = False) -> str:
    """The status for the latest progress event; ``lora_cached`` / ``inversion_cached`` once the editor reported a
    reused identity LoRA / inverted latent."""
    stage = STAGES.get(ev.stage, ev.stage)
    if ev.cached:
        return f"**Running** · **{stage}** reused from cache"
    text = f"**Running** · **{stage}** — step {ev.step}/{ev.total}"
    if ev.loss is not None:
        text += f" · loss {ev.loss:.4g}"
    if lora_cached:
        text += " · " + (LORA_AND_INVERSION_REUSED if inversion_cached else LORA_CACHED)
    elif inversion_cached:
        text += " · inversion reused"
    return text


def lora_note(result: DragResult, requested: Any, generated: bool) -> str:
    """What the edit did about the identity LoRA and the inversion, as the editor reported it
    (``result.lora_cached``, ``result.inversion_cached`` and the config it ran with, falling back to the
    ``requested`` config)."""
    if generated:
        return GENERATED
    inverted = getattr(result, "inversion_cached", False)
    if result.lora_cached:
        return LORA_AND_INVERSION_REUSED if inverted else LORA_CACHED
    if inverted:
        return INVERSION_REUSED
    config = result.config if result.config is not None else requested
    return LORA_TRAINED if getattr(config, "lora_steps", 0) > 0 else NO_LORA


# --- the preparation line (the identity LoRA and the inversion, done in the background once an image is set) -------

PREPARE_QUEUED = "**Preparing** · waiting for the device…"
PREPARE_CANCELLED = "Preparation cancelled: Run trains the identity LoRA and inverts the image itself."


def preparing(ev: ProgressEvent) -> str:
    """The preparation line for its latest progress event ("**Preparing** · identity LoRA 23/80")."""
    stage = STAGES.get(ev.stage, ev.stage)
    if ev.cached:
        return f"**Preparing** · {stage} reused from cache"
    return f"**Preparing** · {stage} {ev.step}/{ev.total} (place the points meanwhile)"


def ready(config: Any) -> str:
    """The preparation line once the image is prepared for ``config``'s settings."""
    what = "identity LoRA and inversion" if getattr(config, "lora_steps", 0) > 0 else "inversion"
    return f"**Ready** · {what} prepared: Run only drags."


def prepare_failed(status: str) -> str:
    """The preparation line after it failed (``status``: its one-line "**Error:** …")."""
    return f"{status} — Run still works: it does the preparation itself."


def done(result: DragResult, note: str, warnings: Sequence[str]) -> str:
    """The status of a finished edit: time, LoRA ``note``, steps and where the handles ended."""
    total = result.timings.get("total", 0)
    handles = ", ".join(f"({x:.0f}, {y:.0f})" for x, y in result.final_handles)
    return (f"**Done** in {total:.1f} s ({note}; {result.steps} drag steps). Final handles: {handles}."
            + warnings_note(warnings))


def live_done(result: DragResult, note: str, warnings: Sequence[str]) -> str:
    """The status of a finished live re-edit (Live on, a one-step method): time, what was reused (LoRA ``note``) and
    where the handles ended."""
    total = result.timings.get("total", 0)
    handles = ", ".join(f"({x:.0f}, {y:.0f})" for x, y in result.final_handles)
    return f"**Live re-edit** in {total:.2f} s ({note}). Final handles: {handles}." + warnings_note(warnings)


LIVE_LABEL = "Live"


def live_hint(method: str, one_step: bool, live_methods: Sequence[str]) -> str:
    """The Live checkbox's one-line hint: what it does for a one-step ``method``; why it is off for an iterative
    one."""
    if one_step:
        return "re-runs the drag on the prepared image as you complete, undo or clear point pairs (no Run needed)"
    others = ", ".join(live_methods) or "none loaded"
    return (f"off: {method} optimises the drag step by step (about a minute per edit on a GPU); Live needs a "
            f"one-step method ({others})")


def generated(seconds: float, config: Any) -> str:
    """The Generate tab's status after a generation."""
    return (f"**Done** in {seconds:.1f} s ({config.width}×{config.height}, {config.scheduler}, seed {config.seed}). "
            "**Drag this image** to edit it.")


def exported(with_result: bool) -> str:
    """The status after Export."""
    return "Exported" + (" (with the result)" if with_result else " (not run yet: no result included)") + "."

