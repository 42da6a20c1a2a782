"""The Gradio page: pick a volume and a model, segment, browse slices, download the mask.

:func:`build_demo` lays out the page and wires the events; the work behind them lives in
:mod:`minivess.demo.session` and the drawing in :mod:`minivess.demo.views`. Every event turns
a minivess error into a :class:`gradio.Error` with the one-line message the CLI would print,
and anything unexpected into a short "internal error" line (the traceback goes to the server
log only), so a bad upload never breaks the page.

The page's events are also an API (``/segment``, ``/slice``, ``/overlay``) that
:class:`gradio_client.Client` can call.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import gradio as gr
import numpy as np

from minivess.demo.session import Segmentation, Segmenter, choose_input
from minivess.demo.views import MASK_OVERLAY, VALUE_MAPS, projection_view, slice_view
from minivess.errors import DataError, MinivessError
from minivess.inference.runners import BACKENDS

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "models:/minivess@champion"
"""The registry's champion, the model the demo offers unless told otherwise."""
TITLE = "minivess: 3D vessel segmentation"
_INTRO = (
    "Segment blood vessels in a two-photon microscopy volume. Upload a 3D NIfTI or TIFF stack "
    "(or pick an example), choose the model, and press **Segment**. The mask is predicted on "
    "the server with the same path as `minivess predict` and can be downloaded as NIfTI on "
    "the input's grid."
)
_F = TypeVar("_F", bound=Callable[..., Any])
Views = tuple[np.ndarray, np.ndarray]


def user_errors(handler: _F) -> _F:
    """Report a handler's failures as :class:`gradio.Error` messages, never as tracebacks."""

    @functools.wraps(handler)
    def wrapper(*args: Any) -> Any:
        try:
            return handler(*args)
        except gr.Error:
            raise
        except MinivessError as exc:
            raise gr.Error(_message(exc), title="Cannot segment", print_exception=False) from None
        except Exception as exc:
            logger.exception("demo request failed")
            raise gr.Error(
                f"internal error: {type(exc).__name__}: {exc} (the server log has the details)",
                title="Internal error",
                print_exception=False,
            ) from None

    return cast(_F, wrapper)


def _message(exc: MinivessError) -> str:
    """The error's text, naming an uploaded file by its name rather than its server copy."""
    if isinstance(exc, DataError) and exc.path is not None:
        return f"{exc.path.name}: [{exc.rule}] {exc.message}"
    return str(exc)


def _slice(result: Segmentation, depth: float, overlay: str) -> np.ndarray:
    """Slice ``depth`` of ``result`` (clamped to the volume) with the chosen overlay."""
    image = np.asarray(result.image.array)
    index = min(max(int(depth), 0), image.shape[2] - 1)
    values = result.overlay(overlay)
    return slice_view(image, values, index, result.display, mask=overlay == MASK_OVERLAY)


def _projection(result: Segmentation, overlay: str) -> np.ndarray:
    """Maximum projection of ``result`` with the chosen overlay's projection."""
    values = result.overlay(overlay)
    image = np.asarray(result.image.array)
    return projection_view(image, values, result.display, mask=overlay == MASK_OVERLAY)


class DemoHandlers:
    """The functions behind the page's events.

    Args:
        segmenter: Loads models (cached) and segments files.
        examples: Example volumes offered by name.
    """

    def __init__(self, segmenter: Segmenter, examples: dict[str, Path]) -> None:
        self.segmenter = segmenter
        self.examples = examples

    def segment(
        self, upload: str | None, example: str | None, model: str, backend: str, overlay: str
    ) -> tuple[Any, ...]:
        """Segment the chosen volume; returns the state and every output the page updates."""
        path = choose_input(upload, example, self.examples)
        result = self.segmenter.segment(path, model, backend)
        depth = result.image.shape[2]
        middle = depth // 2
        return (
            result,
            _slice(result, middle, overlay),
            _projection(result, overlay),
            gr.update(minimum=0, maximum=depth - 1, value=middle, interactive=depth > 1),
            gr.update(interactive=True),
            result.summary(),
            str(result.mask_file),
        )

    def show_slice(self, result: Segmentation | None, depth: float, overlay: str) -> np.ndarray:
        """The slice image at ``depth`` (the projection does not change)."""
        return _slice(_segmented(result), depth, overlay)

    def show_views(self, result: Segmentation | None, depth: float, overlay: str) -> Views:
        """Slice and projection images with another overlay."""
        segmented = _segmented(result)
        return _slice(segmented, depth, overlay), _projection(segmented, overlay)


def _segmented(result: Segmentation | None) -> Segmentation:
    if result is None:
        raise DataError(None, "no-prediction", "segment a volume first")
    return result


def build_demo(
    segmenter: Segmenter,
    *,
    examples: dict[str, Path] | None = None,
    default_model: str = DEFAULT_MODEL,
    default_backend: str = "torch",
) -> gr.Blocks:
    """The demo page, ready to :meth:`~gradio.Blocks.launch`.

    Args:
        segmenter: Loads models (cached) and segments files.
        examples: Volumes offered in the example menu, by name; none hides the menu.
        default_model: Model source filled in at start (checkpoint, export or MLflow URI).
        default_backend: Runtime selected at start (one of ``torch``, ``onnx``).
    """
    examples = examples or {}
    handlers = DemoHandlers(segmenter, examples)
    with gr.Blocks(title=TITLE, analytics_enabled=False, delete_cache=(3600, 3600)) as demo:
        gr.Markdown(f"# {TITLE}\n{_INTRO}")
        state = gr.State(None)
        with gr.Row():
            with gr.Column(scale=1):
                upload = gr.File(label="Volume (.nii, .nii.gz, .tif, .tiff)", elem_id="upload")
                example = gr.Dropdown(
                    choices=list(examples),
                    value=None,
                    label="...or an example volume",
                    visible=bool(examples),
                    elem_id="example",
                )
                model = gr.Textbox(
                    value=default_model,
                    label="Model",
                    info="checkpoint or export path on the server, or models:/NAME@ALIAS",
                    elem_id="model",
                )
                backend = gr.Radio(list(BACKENDS), value=default_backend, label="Backend")
                run = gr.Button("Segment", variant="primary", elem_id="segment")
            with gr.Column(scale=2):
                overlay = gr.Radio(
                    [MASK_OVERLAY, *VALUE_MAPS],
                    value=MASK_OVERLAY,
                    label="Overlay",
                    info="P(vessel) and its entropy show where the model is unsure",
                    interactive=False,
                    elem_id="overlay",
                )
                depth = gr.Slider(0, 1, value=0, step=1, label="Slice z", interactive=False)
                with gr.Row():
                    slice_image = gr.Image(
                        label="Slice", format="png", interactive=False, elem_id="slice-view"
                    )
                    projection = gr.Image(
                        label="Maximum projection",
                        format="png",
                        interactive=False,
                        elem_id="projection-view",
                    )
                with gr.Row():
                    summary = gr.JSON(label="Summary", open=True, elem_id="summary", scale=2)
                    mask_file = gr.File(
                        label="Mask (NIfTI)", interactive=False, elem_id="mask", scale=1
                    )
        run.click(
            user_errors(handlers.segment),
            [upload, example, model, backend, overlay],
            [state, slice_image, projection, depth, overlay, summary, mask_file],
            api_name="segment",
            concurrency_limit=1,  # one prediction at a time: the CPUs are shared
        )
        depth.input(
            user_errors(handlers.show_slice), [state, depth, overlay], slice_image, api_name="slice"
        )
        overlay.input(
            user_errors(handlers.show_views),
            [state, depth, overlay],
            [slice_image, projection],
            api_name="overlay",
        )
    return demo


def launch_demo(
    segmenter: Segmenter,
    *,
    host: str,
    port: int,
    examples: dict[str, Path] | None = None,
    default_model: str = DEFAULT_MODEL,
    default_backend: str = "torch",
    max_upload_mb: float | None = None,
) -> None:
    """Serve the demo on ``host:port`` until interrupted (analytics off, no public link).

    Args:
        segmenter: Loads models (cached) and segments files.
        host: Interface to bind.
        port: TCP port.
        examples: Volumes offered in the example menu, by name.
        default_model: Model source filled in at start.
        default_backend: Runtime selected at start.
        max_upload_mb: Largest upload accepted, in MiB; ``None`` for no limit.

    Raises:
        MinivessError: The port is taken or the host cannot be bound.
    """
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    demo = build_demo(
        segmenter,
        examples=examples,
        default_model=default_model,
        default_backend=default_backend,
    )
    demo.queue(default_concurrency_limit=4)  # redrawing a slice must not wait for a prediction
    try:
        demo.launch(
            server_name=host,
            server_port=port,
            share=False,
            ssr_mode=False,
            quiet=True,
            max_file_size=None if max_upload_mb is None else int(max_upload_mb * 2**20),
        )
    except OSError as exc:
        raise MinivessError(
            f"cannot serve the demo on {host}:{port} ({exc}); choose another port with "
            "--port or demo.port in configs/settings.toml (MINIVESS_DEMO__PORT)"
        ) from None
