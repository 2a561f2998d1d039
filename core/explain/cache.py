"""Explanations of workspace images, cached in the workspace.

The key is a hash of (image content identity, model version and its file
hash, method, target, parameters): the image's workspace key (SOP Instance UID
for DICOM, ``sha256:`` of the bytes for photographs) stands for its content.
A new model version has a new version name and file hash, so it can never be
served an older version's map. Runtime-only settings (batch size, device) are
not part of the key: they change speed, not values.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from dataclasses import replace
from typing import Any, Optional

import numpy as np

from core.explain.base import RUNTIME_PARAMS, get_method
from core.explain.protocol import add_randomisation, explain, resolve_params, resolve_target
from core.types import Explanation

logger = logging.getLogger(__name__)

KEY_SCHEMA = 1


def cache_key(image_key: str, version: str, file_hash: str, method: str, target: str, params: dict) -> str:
    """Hex sha256 of the canonical JSON of everything that decides a map's values."""
    doc = {"schema": KEY_SCHEMA, "image": image_key, "version": version, "file_hash": file_hash,
           "method": method, "target": target,
           "params": {k: v for k, v in sorted(params.items()) if k not in RUNTIME_PARAMS}}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


def _pack(e: Explanation) -> bytes:
    buf = io.BytesIO()
    arrays = {"map": e.map}
    if e.signed is not None:
        arrays["signed"] = e.signed.astype(np.float16)  # sign and shape matter, not the 4th digit
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def _unpack(data: bytes) -> tuple[np.ndarray, Optional[np.ndarray]]:
    with np.load(io.BytesIO(data)) as z:
        signed = z["signed"].astype(np.float32) if "signed" in z.files else None
        return z["map"].astype(np.float32), signed


def explain_image(workspace, image: str, method: str, target: Optional[str] = None, *,
                  version: Optional[str] = None, faithfulness: bool = False, use_cache: bool = True,
                  **kwargs: Any) -> Explanation:
    """Explain a workspace image (id or imported path) with a model version (the active one by default).

    Serves the map from the workspace cache when the same image, version, method,
    target and parameters were explained before (``cached=True``); otherwise
    computes it with :func:`~core.explain.protocol.explain` and stores it. When
    ``faithfulness`` is asked for and the cached entry lacks it, it is computed for
    the cached map and added to the entry. Other keyword arguments go to ``explain``.

    Raises:
        NotFound: unknown image. ModelError: no model, unknown method / target / parameter.
    """
    from core.imaging import model_input
    from core.models.versions import load_version

    ref = workspace.find_image(image)
    loaded = load_version(workspace, version)
    m = get_method(method)
    runtime = {k: kwargs.pop(k) for k in list(kwargs) if k in ("device", "batch_size", "cancel", "progress")}
    params = resolve_params(m.name, loaded.spec.size, kwargs)
    t_index = resolve_target(loaded.classes, target)
    t_name = "predicted" if t_index is None else loaded.classes[t_index]
    rec = loaded.version
    key = cache_key(ref.record.key, rec.version, rec.file_hash, m.name, t_name, params)
    hit = workspace.get_explanation(key) if use_cache else None
    if hit is not None:
        meta = hit["meta"]
        heat, signed = _unpack(hit["data"])
        e = Explanation(map=heat, signed=signed, method=m.name, target=meta["target"],
                        target_index=int(meta["target_index"]), version=rec.version, seconds=float(meta["seconds"]),
                        params=hit["params"], faithfulness=meta.get("faithfulness", {}), cached=True,
                        score=meta.get("score"), image_id=ref.id)
        if faithfulness and "randomisation" not in (e.faithfulness or {}):
            e = replace(e, faithfulness=_faith_for(loaded, model_input(ref.path), e, runtime, params))
            _store(workspace, key, ref.id, e)
        logger.info("explanation cache hit %s", key[:12])
        return e
    e = explain(loaded, model_input(ref.path), m.name, t_index, faithfulness=faithfulness, image_id=ref.id,
                **runtime, **params)
    _store(workspace, key, ref.id, e)
    return e


def _faith_for(loaded, arr: np.ndarray, e: Explanation, runtime: dict, params: dict) -> dict:
    from core.explain.base import using_copy
    from core.explain.faithfulness import deletion_insertion, to_model_space
    from core.explain.protocol import _device, default_batch_size
    from core.models.preprocess import to_tensor_with_geometry

    dev = _device(runtime.get("device"))
    x, geo = to_tensor_with_geometry(arr, loaded.spec)
    bs = runtime.get("batch_size") or default_batch_size(dev)
    with using_copy(loaded.net, dev) as net:
        faith = deletion_insertion(net, x[None].to(dev), to_model_space(e.map, geo), e.target_index,
                                   multilabel=loaded.multilabel, batch_size=bs, cancel=runtime.get("cancel"))
    return add_randomisation(faith, loaded, arr, e.method, e.target_index, e.map, device=runtime.get("device"),
                             batch_size=bs, cancel=runtime.get("cancel"), **params)


def _store(workspace, key: str, image_id: str, e: Explanation) -> None:
    meta = {"target": e.target, "target_index": e.target_index, "seconds": e.seconds, "shape": list(e.shape),
            "faithfulness": e.faithfulness, "score": e.score, "dtype": "float32"}
    workspace.put_explanation(key, image_id, e.version, e.method, e.target, e.params, _pack(e), meta)
