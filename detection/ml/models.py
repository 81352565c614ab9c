"""The image model: an open_clip image tower plus per-policy linear heads.

A `ModelConfig` names everything the worker needs to score images the way the detection tier
does: the open_clip architecture of the image tower, the tower's weights file, the heads file
(one logistic head per policy code over the L2-normalised image embedding), the input size,
device and batch size, and a human label saying which weights these are. Production points the
config at the detection tier's released checkpoint; the demo builds its own weights locally
with `build_demo_weights` (and its label says so). Nothing is downloaded: open_clip builds the
tower with `pretrained=None` and the weights are loaded from the configured file.

Weights file: a ``torch.save``d state dict of the image tower (``model.visual``); a full CLIP
state dict (keys prefixed ``visual.``) is accepted too. Heads file: ``.npz`` with
``policies`` (str array), ``weight`` (P×d float32), ``bias`` (P float32) and ``meta`` (a JSON
string), or a ``.pt`` mapping policy code → {"weight": d-vector, "bias": scalar}.

No Django here; torch and open_clip are imported lazily so importing this module is cheap.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from detection.ml.compat import ensure_torchvision

if TYPE_CHECKING:
    import torch

from detection.policies import POLICY_CODES  # plain constants, no Django

# open_clip's (OpenAI CLIP's) normalisation constants.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
RANDOM_INIT_LABEL = "random-init tower (no weights file): scores and heatmaps are meaningless"


@dataclass(frozen=True)
class ModelConfig:
    """What to load. Relative paths in a JSON config resolve against the config file's folder."""

    architecture: str = "ViT-B-32"
    weights_path: str | None = None  # None: random initialisation, labelled as such
    heads_path: str | None = None  # None: embeddings only, no policy scores
    image_size: int = 224
    label: str = ""  # shown to people: which weights these are
    version: str = ""  # recorded beside every heatmap and embedding
    device: str = "auto"  # "auto" = CUDA when available, else CPU; or "cpu", "cuda", "cuda:1"
    batch_size: int = 16
    resize_mode: str = "squash"  # "squash" keeps the whole photo; "shortest" = resize + centre crop
    seed: int = 0  # torch seed for random initialisation (weights_path None)
    # torch CPU threads for this process (0: torch's default, all cores). On a host shared by
    # several workers, 1 per worker avoids OpenMP threads spinning for a busy core.
    threads: int = 0
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD

    def __post_init__(self) -> None:
        if self.resize_mode not in ("squash", "shortest"):
            raise ValueError(
                f"resize_mode must be 'squash' or 'shortest', not {self.resize_mode!r}"
            )
        if self.batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if self.image_size < 16:
            raise ValueError("image_size is too small")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], base_dir: str | Path | None = None) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        values = dict(data)
        for key in ("weights_path", "heads_path"):
            if values.get(key) and base_dir is not None and not Path(values[key]).is_absolute():
                values[key] = str(Path(base_dir) / values[key])
        for key in ("mean", "std"):
            if key in values:
                values[key] = tuple(float(v) for v in values[key])
        return cls(**values)

    @classmethod
    def from_json(cls, path: str | Path) -> ModelConfig:
        path = Path(path)
        return cls.from_dict(json.loads(path.read_text()), base_dir=path.parent)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["mean"], data["std"] = list(self.mean), list(self.std)
        return data

    @property
    def display_label(self) -> str:
        """The label a page shows; never empty, and explicit about random weights."""
        if self.weights_path is None:
            return f"{self.architecture}: {RANDOM_INIT_LABEL}"
        return self.label or f"{self.architecture} weights from {Path(self.weights_path).name}"


def resolve_device(name: str = "auto") -> torch.device:
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


# --------------------------------------------------------------------------------------------
# Heads


@dataclass
class PolicyHeads:
    """One logistic head per policy over the L2-normalised image embedding."""

    policies: tuple[str, ...]
    weight: np.ndarray  # (P, d) float32
    bias: np.ndarray  # (P,) float32
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.weight = np.asarray(self.weight, dtype=np.float32)
        self.bias = np.asarray(self.bias, dtype=np.float32).reshape(-1)
        self.policies = tuple(str(p) for p in self.policies)
        if self.weight.ndim != 2 or self.weight.shape[0] != len(self.policies):
            raise ValueError("weight must be (number of policies, embedding dim)")
        if self.bias.shape != (len(self.policies),):
            raise ValueError("bias must have one value per policy")
        unknown = set(self.policies) - set(POLICY_CODES)
        if unknown:
            raise ValueError(f"unknown policy codes in heads: {sorted(unknown)}")

    @property
    def dim(self) -> int:
        return int(self.weight.shape[1])

    def index(self, policy: str) -> int:
        try:
            return self.policies.index(policy)
        except ValueError:
            raise KeyError(
                f"no head for policy {policy!r}; heads exist for {self.policies}"
            ) from None

    def logits(self, embeddings: np.ndarray) -> np.ndarray:
        logits: np.ndarray = np.asarray(embeddings, dtype=np.float32) @ self.weight.T + self.bias
        return logits

    def probabilities(self, embeddings: np.ndarray) -> np.ndarray:
        probabilities: np.ndarray = 1.0 / (1.0 + np.exp(-self.logits(embeddings)))
        return probabilities

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as fh:  # a file handle keeps numpy from appending ".npz"
            np.savez(
                fh,
                policies=np.array(self.policies),
                weight=self.weight,
                bias=self.bias,
                meta=np.array(json.dumps(self.meta, sort_keys=True)),
            )
        return path

    @classmethod
    def load(cls, path: str | Path) -> PolicyHeads:
        path = Path(path)
        if path.suffix == ".pt":
            import torch

            raw = torch.load(path, map_location="cpu", weights_only=True)
            policies = tuple(raw)
            weight = np.stack([np.asarray(raw[p]["weight"], dtype=np.float32) for p in policies])
            bias = np.array([float(raw[p]["bias"]) for p in policies], dtype=np.float32)
            return cls(policies, weight, bias, {"source": path.name})
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"])) if "meta" in data else {}
            return cls(tuple(data["policies"].tolist()), data["weight"], data["bias"], meta)


def fit_heads(
    embeddings: np.ndarray,
    labels_per_policy: Mapping[str, Sequence[int] | np.ndarray],
    *,
    C: float = 1.0,
    meta: Mapping[str, Any] | None = None,
) -> PolicyHeads:
    """Fit one logistic-regression head per policy (1 = violating, 0 = not).

    Features are standardised for the fit (embeddings of one tower are often close to each
    other) and the scaling is folded back into the weights, so the heads apply directly to the
    normalised embedding. A policy whose labels are all one class gets no head.
    """
    from sklearn.linear_model import LogisticRegression

    x = np.asarray(embeddings, dtype=np.float64)
    mu = x.mean(axis=0)
    sigma = x.std(axis=0) + 1e-6
    z = (x - mu) / sigma
    policies, weights, biases, skipped = [], [], [], []
    for policy in POLICY_CODES:
        if policy not in labels_per_policy:
            continue
        y = np.asarray(labels_per_policy[policy]).astype(int)
        if y.shape[0] != x.shape[0]:
            raise ValueError(f"{policy}: {y.shape[0]} labels for {x.shape[0]} embeddings")
        if len(np.unique(y)) < 2:
            skipped.append(policy)
            continue
        clf = LogisticRegression(C=C, class_weight="balanced", max_iter=2000)
        clf.fit(z, y)
        w = clf.coef_[0] / sigma
        b = clf.intercept_[0] - float(np.dot(clf.coef_[0], mu / sigma))
        policies.append(policy)
        weights.append(w)
        biases.append(b)
    if not policies:
        raise ValueError("no policy has both violating and non-violating examples")
    info = {
        "fitted_on": int(x.shape[0]),
        "C": C,
        "skipped_single_class": skipped,
        "positives": {p: int(np.sum(labels_per_policy[p])) for p in policies},
    }
    info.update(meta or {})
    return PolicyHeads(tuple(policies), np.stack(weights), np.array(biases), info)


# --------------------------------------------------------------------------------------------
# The tower


def build_visual(
    architecture: str, *, seed: int = 0, image_size: int | None = None
) -> torch.nn.Module:
    """The open_clip image tower of `architecture`, randomly initialised (seeded), on CPU."""
    import torch

    ensure_torchvision()
    import open_clip

    saved_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        kwargs: dict[str, Any] = {"pretrained": None}
        if image_size is not None:
            kwargs["force_image_size"] = image_size
        clip = open_clip.create_model(architecture, **kwargs)
    finally:
        torch.random.set_rng_state(saved_state)
    visual: torch.nn.Module = clip.visual
    del clip
    visual.eval()
    return visual


def _strip_visual_prefix(state: Mapping[str, Any]) -> dict[str, Any]:
    if any(k.startswith("visual.") for k in state):
        return {k[len("visual.") :]: v for k, v in state.items() if k.startswith("visual.")}
    return dict(state)


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _tower_module(visual: torch.nn.Module) -> torch.nn.Module:
    """A module whose forward gives the L2-normalised embedding, keeping `visual` as attribute
    (so Grad-CAM target layers are spelled `visual.…` as for a full CLIP model)."""
    import torch
    import torch.nn.functional as F

    class ImageTower(torch.nn.Module):
        def __init__(self, visual: torch.nn.Module) -> None:
            super().__init__()
            self.visual = visual

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.normalize(self.visual(x), dim=-1)

    return ImageTower(visual)


def _scorer_module(tower: torch.nn.Module, heads: PolicyHeads) -> torch.nn.Module:
    """tower → per-policy logits, as one module (the Grad-CAM model)."""
    import torch

    class PolicyScorer(torch.nn.Module):
        def __init__(self, tower: torch.nn.Module, heads: PolicyHeads) -> None:
            super().__init__()
            self.tower = tower
            self.visual = tower.visual  # same submodule, so `visual.…` target paths resolve
            self.heads = torch.nn.Linear(heads.dim, len(heads.policies))
            with torch.no_grad():
                self.heads.weight.copy_(torch.from_numpy(heads.weight))
                self.heads.bias.copy_(torch.from_numpy(heads.bias))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            scores: torch.Tensor = self.heads(self.tower(x))
            return scores

    return PolicyScorer(tower, heads)


class ImageModel:
    """Loads the configured tower and heads once; embeds and scores PIL images in batches."""

    def __init__(self, config: ModelConfig, *, _visual: torch.nn.Module | None = None) -> None:
        import torch

        self.config = config
        self.device = resolve_device(config.device)
        if config.threads > 0:
            torch.set_num_threads(config.threads)
        started = time.perf_counter()
        visual = _visual
        if visual is None:
            visual = build_visual(
                config.architecture, seed=config.seed, image_size=config.image_size
            )
        self.weights_sha256: str | None = None
        if config.weights_path is not None:
            state = torch.load(config.weights_path, map_location="cpu", weights_only=True)
            visual.load_state_dict(_strip_visual_prefix(state))
            self.weights_sha256 = file_sha256(config.weights_path)
        self.tower = _tower_module(visual).to(self.device).eval()
        for p in self.tower.parameters():
            p.requires_grad_(False)
        self.heads: PolicyHeads | None = None
        if config.heads_path is not None:
            self.heads = PolicyHeads.load(config.heads_path)
        self.load_seconds = time.perf_counter() - started
        self._scorer: torch.nn.Module | None = None
        with torch.inference_mode():
            probe = self.tower(
                torch.zeros(1, 3, config.image_size, config.image_size, device=self.device)
            )
        self.embed_dim = int(probe.shape[-1])
        if self.heads is not None and self.heads.dim != self.embed_dim:
            raise ValueError(
                f"heads are over {self.heads.dim}-d embeddings, the tower gives {self.embed_dim}-d"
            )

    # -- identity ------------------------------------------------------------------------
    @property
    def is_random_init(self) -> bool:
        return self.config.weights_path is None

    @property
    def label(self) -> str:
        return self.config.display_label

    @property
    def version(self) -> str:
        """Recorded beside every heatmap/embedding: config version plus a weights fingerprint."""
        fingerprint = (self.weights_sha256 or f"random-seed{self.config.seed}")[:12]
        base = self.config.version or self.config.architecture
        return f"{base}+{fingerprint}"

    @property
    def policies(self) -> tuple[str, ...]:
        return self.heads.policies if self.heads is not None else ()

    # -- preprocessing ---------------------------------------------------------------------
    def crop_box(self, image: Image.Image) -> tuple[int, int, int, int]:
        """The region of `image` the model sees (all of it when squashing)."""
        w, h = image.size
        if self.config.resize_mode == "squash":
            return (0, 0, w, h)
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        return (left, top, left + side, top + side)

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        import torch

        size = self.config.image_size
        arrays = []
        for image in images:
            rgb = image.convert("RGB").crop(self.crop_box(image))
            rgb = rgb.resize((size, size), Image.Resampling.BICUBIC)
            arrays.append(np.asarray(rgb, dtype=np.float32) / 255.0)
        batch = np.stack(arrays)
        batch = (batch - np.array(self.config.mean, np.float32)) / np.array(
            self.config.std, np.float32
        )
        return torch.from_numpy(batch.transpose(0, 3, 1, 2).copy())

    def batches(self, images: Sequence[Image.Image]) -> Iterator[Sequence[Image.Image]]:
        step = self.config.batch_size
        for start in range(0, len(images), step):
            yield images[start : start + step]

    # -- inference -------------------------------------------------------------------------
    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """(n, d) float32, each row L2-normalised."""
        import torch

        if len(images) == 0:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        out = []
        with torch.inference_mode():
            for chunk in self.batches(list(images)):
                emb = self.tower(self.preprocess(chunk).to(self.device))
                out.append(emb.float().cpu().numpy())
        return np.concatenate(out).astype(np.float32)

    def scores_from_embeddings(self, embeddings: np.ndarray) -> list[dict[str, float]]:
        if self.heads is None:
            raise RuntimeError("no heads file is configured: this model gives embeddings only")
        probs = self.heads.probabilities(embeddings)
        return [
            {policy: float(row[i]) for i, policy in enumerate(self.heads.policies)} for row in probs
        ]

    def score(self, images: Sequence[Image.Image]) -> list[dict[str, float]]:
        """Per image, {policy code: probability} for each policy that has a head."""
        return self.scores_from_embeddings(self.embed_images(images))

    def scorer(self) -> torch.nn.Module:
        """The tower plus heads as one torch module giving per-policy logits (for Grad-CAM)."""
        if self.heads is None:
            raise RuntimeError("no heads file is configured: heatmaps need a policy head")
        if self._scorer is None:
            self._scorer = _scorer_module(self.tower, self.heads).to(self.device).eval()
            for p in self._scorer.parameters():
                p.requires_grad_(False)
        return self._scorer


def load_model(config: ModelConfig | str | Path | Mapping[str, Any]) -> ImageModel:
    """An ImageModel from a config object, a JSON file path or a dict."""
    if isinstance(config, (str, Path)):
        config = ModelConfig.from_json(config)
    elif isinstance(config, Mapping):
        config = ModelConfig.from_dict(config)
    return ImageModel(config)


# --------------------------------------------------------------------------------------------
# Demo weights


def build_demo_weights(
    out_dir: str | Path,
    *,
    labelled_images: Sequence[Any] | None = None,
    architecture: str = "RN50",
    seed: int = 0,
    version: str = "demo-1",
    C: float = 1.0,
    per_policy: int = 32,
) -> Path:
    """Build demo weights in `out_dir` and return the path of its ``model.json``.

    The tower is open_clip's `architecture`, randomly initialised with `seed` and saved to
    ``tower.pt`` (no pretrained weights exist on this machine). The per-policy heads are
    logistic regressions fitted on the tower's embeddings of labelled images:
    `labelled_images` is a sequence of (PIL image, policy code or None for benign) pairs, or
    of objects with ``.image`` and ``.policy`` (like `detection.ml.demo.DemoImage`). When it is
    None, `per_policy` synthetic photos per policy and twice as many benign ones are drawn
    with `detection.ml.demo`.

    Why RN50 by default: random convolutional features stay local, so a head fitted on them
    responds to the object's own pixels and Grad-CAM on ``layer4`` points at the object
    (on held-out demo photos the peak falls on the object's box for most images). A random
    ViT mixes all tokens through its random attention, and Grad-CAM maps from it scatter.
    These weights show the mechanics only: the label says they are not a trained detector.
    """
    import torch

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if labelled_images is None:
        from detection.ml.demo import demo_training_set

        labelled_images = demo_training_set(per_policy=per_policy, benign=2 * per_policy, seed=seed)
    # DemoImage objects or (image, policy) pairs: see the docstring.
    labelled: Sequence[Any] = labelled_images
    images: list[Image.Image] = []
    owners: list[str | None] = []
    for item in labelled:
        image, policy = (item.image, item.policy) if hasattr(item, "image") else item
        if policy is not None and policy not in POLICY_CODES:
            raise ValueError(f"unknown policy code: {policy}")
        images.append(image)
        owners.append(policy)

    visual = build_visual(architecture, seed=seed)
    tower_path = out / "tower.pt"
    torch.save(visual.state_dict(), tower_path)
    config = ModelConfig(
        architecture=architecture,
        weights_path=str(tower_path),
        label=f"Demo weights, built locally: {architecture} tower with random weights "
        f"(seed {seed}) and per-policy heads fitted on {len(images)} synthetic demo photos. "
        "Not a trained detector.",
        version=version,
        seed=seed,
    )
    model = ImageModel(config, _visual=visual)
    embeddings = model.embed_images(images)
    labels = {p: np.array([o == p for o in owners], dtype=int) for p in POLICY_CODES if p in owners}
    heads = fit_heads(
        embeddings, labels, C=C, meta={"architecture": architecture, "version": version}
    )
    heads_path = heads.save(out / "heads.npz")

    data = replace(config, heads_path=str(heads_path)).to_dict()
    data["weights_path"], data["heads_path"] = tower_path.name, heads_path.name
    config_path = out / "model.json"
    config_path.write_text(json.dumps(data, indent=2) + "\n")
    return config_path
