"""Make torchvision importable next to a CPU-only torch.

The pinned torchvision 0.28.0 wheel is a CUDA build. With the CPU torch its compiled
extension (``_C.so``) cannot load, and ``import torchvision`` then fails inside
``torchvision/_meta_registrations.py`` with ``operator torchvision::nms does not exist``:
that module registers fake kernels for ``nms`` and ``qnms`` unconditionally, assuming the
extension defined them. open_clip, timm, pytorch_grad_cam and parts of transformers import
torchvision, so they all fail the same way.

``ensure_torchvision()`` defines the schemas of the missing operators through
``torch.library`` before torchvision is first imported. The operators stay without kernels
(calling ``torchvision.ops.nms`` raises), which the portal never needs: it uses torchvision
only through open_clip's image transforms. Where the extension loads (a CUDA machine with a
matching torch), nothing is defined and this is a no-op.

Call it before importing open_clip, pytorch_grad_cam or timm.
"""

from __future__ import annotations

import importlib.util
import sys
import threading
from pathlib import Path

# Schemas as torchvision's C++ extension declares them (torchvision/csrc/ops/*.cpp).
# nms and qnms are the ones torchvision's import needs; the rest are defined too so that
# torch.ops.torchvision.<name> resolves to a clear "no kernel" error instead of an
# AttributeError should any library probe for them.
_SCHEMAS: dict[str, str] = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}

_lock = threading.Lock()
_state: str | None = None
# A torch.library.Library deregisters its definitions when garbage-collected: keep it.
_library = None


def _op_defined(name: str) -> bool:
    import torch

    try:
        torch._C._dispatch_find_schema_or_throw(f"torchvision::{name}", "")
    except RuntimeError:
        return False
    return True


def _load_extension() -> bool:
    """Load torchvision's compiled ops the way torchvision would; False when they can't load."""
    import torch

    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return False
    for location in spec.submodule_search_locations:
        for candidate in sorted(Path(location).glob("_C*.so")) + sorted(
            Path(location).glob("_C*.pyd")
        ):
            try:
                torch.ops.load_library(str(candidate))
            except (OSError, RuntimeError):
                continue
            return True
    return False


def ensure_torchvision() -> str:
    """Make ``import torchvision`` work; return how: ``"native"`` or ``"schemas-registered"``.

    Idempotent and thread-safe. Raises ImportError when torchvision is not installed.
    """
    global _state, _library
    with _lock:
        if _state is not None:
            return _state
        if "torchvision" in sys.modules and hasattr(sys.modules["torchvision"], "__version__"):
            _state = "native" if _op_defined("nms") else "schemas-registered"
            return _state
        if importlib.util.find_spec("torchvision") is None:
            raise ImportError("torchvision is not installed")

        import torch

        if _load_extension() and _op_defined("nms"):
            state = "native"
        else:
            missing = [name for name in _SCHEMAS if not _op_defined(name)]
            if missing:
                _library = torch.library.Library("torchvision", "DEF")
                for name in missing:
                    _library.define(_SCHEMAS[name])
            state = "schemas-registered"

        import torchvision  # noqa: F401  (the import this function exists for)

        _state = state
        return _state
