"""Interactive Gradio demo: segment a volume in the browser and look at the result.

Run it with ``minivess demo`` (or ``just demo``); see ``docs/serving.md``.

Example:
    >>> from minivess.demo import PredictorCache, Segmenter, build_demo  # doctest: +SKIP
    >>> build_demo(Segmenter(PredictorCache("cpu"))).launch()  # doctest: +SKIP
"""

from minivess.demo.app import DEFAULT_MODEL, build_demo, launch_demo
from minivess.demo.session import (
    PredictorCache,
    Segmentation,
    Segmenter,
    choose_input,
    example_volumes,
)

__all__ = [
    "DEFAULT_MODEL",
    "PredictorCache",
    "Segmentation",
    "Segmenter",
    "build_demo",
    "choose_input",
    "example_volumes",
    "launch_demo",
]
