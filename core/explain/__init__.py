"""Explanations: one protocol, one small module per method.

``explain(model_version, image, method, target=None, **params) -> Explanation``
(:mod:`core.explain.protocol`) computes a [0, 1] map in the rendered image's
geometry; :func:`explain_image` adds the workspace cache; faithfulness
(deletion / insertion AUC) and the model-randomisation sanity check live in
:mod:`core.explain.faithfulness` and :mod:`core.explain.sanity`.

Methods: ``gradcam``, ``lime`` (Loupe's own batched LIME), ``ig``, ``gradshap``, ``occlusion`` (captum);
``layercam`` (multi-layer LayerCAM, :mod:`core.explain.layercam`) through the API, not yet in the app's list.
"""

from core.explain import gradcam, gradient_shap, integrated_gradients, layercam, lime, occlusion  # noqa: F401 (register)
from core.explain.base import METHODS, get_method, hook_count
from core.explain.cache import cache_key, explain_image
from core.explain.protocol import explain, explain_findings

#: Method names in the order the app lists them.
METHOD_NAMES = ("gradcam", "lime", "ig", "gradshap", "occlusion")

__all__ = ["METHODS", "METHOD_NAMES", "cache_key", "explain", "explain_findings", "explain_image",
           "get_method", "hook_count"]
