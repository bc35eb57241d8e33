"""Expressions of the faces in a photo: ``Predictor`` (``python -m ferlib predict`` is its shell command).

``Predictor.from_run(run_dir)`` (a run written by ``ferlib.engine.train``) or ``Predictor.from_weights(entry_or_file)``
(a ``ferlib.weights`` entry, or a checkpoint file with ``model=``) builds the model; ``predictor(photo)``
finds the faces with MTCNN (the detector ``ferlib.data.align`` uses; its weights ship in facenet-pytorch's
wheel), crops each face the way the model's training data was cropped, applies the model's own eval transform
(``ferlib.data.transforms.build_batch_transform(recipe, train=False)``: size, resize / crop, colour order,
mean/std) and returns, per face, the box, the five landmarks and the probabilities over the model's classes.

Crops (the ``face_crop`` of the record of the dataset the model was trained on, ``ferlib.data.dataset_info``;
``crop=`` overrides):

- ``aligned``: the 5-point similarity warp onto the face template at 100×100 (RAF-DB's aligned crops; the
  synthetic set is drawn the same way), border filled with black;
- ``box``: the detector's box made square (AffectNet's face-box crops);
- ``grey48``: the square box in grey levels at 48×48 (FER2013 / FERPlus), repeated to three channels.

``python -m ferlib predict PHOTO_OR_FOLDER… --run DIR | --weights ENTRY [--out DIR]`` prints a table,
writes an annotated PNG per photo (boxes, top class, a small probability bar per face) and, for a folder or
several photos, one CSV.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from ferlib.data.readers.imagefolder import IMG_EXTENSIONS
from ferlib.data.registry import face_crop

#: Side of the crop handed to the eval transform, per style (RAF-DB's aligned crops are 100×100).
CROP_SIZES = {"aligned": 100, "box": 224, "grey48": 48}


class PredictError(RuntimeError):
    """A photo or a model cannot be used (the message says why)."""


class UnreadablePhotoError(PredictError):
    """A photo file exists but cannot be decoded (a zero-byte file, a web page saved as .jpg, a truncated file);
    ``reason`` is the dataset readers' skip reason (``unreadable`` or ``too large``, ``ferlib.data.base.skip_reason``)."""

    def __init__(self, path, reason: str, detail: str):
        super().__init__(f"{path} cannot be read as an image ({reason}: {detail})")
        self.path, self.reason, self.detail = Path(path), reason, detail


@dataclasses.dataclass
class FacePrediction:
    """One face: ``box`` (x1, y1, x2, y2) in photo pixels, ``landmarks`` float [5,2] (eye centres, nose tip,
    mouth corners), ``score`` the detector's confidence, ``probs`` {class name: probability} in the model's
    class order (they sum to one), ``crop`` the uint8 [S,S,3] face handed to the eval transform."""

    box: tuple
    landmarks: np.ndarray
    score: float
    probs: dict
    crop: np.ndarray | None = None

    @property
    def label(self) -> str:
        """The most probable class."""
        return max(self.probs, key=self.probs.get)

    @property
    def confidence(self) -> float:
        return float(self.probs[self.label])


@dataclasses.dataclass
class PhotoPrediction:
    """The faces found in one photo (iterable, indexable); ``image`` is the photo, uint8 [H,W,3] RGB."""

    image: np.ndarray
    faces: list
    classes: list
    path: str | None = None

    def __iter__(self):
        return iter(self.faces)

    def __len__(self) -> int:
        return len(self.faces)

    def __getitem__(self, i) -> FacePrediction:
        return self.faces[i]

    def rows(self) -> list[dict]:
        """One dict per face: photo, face, x1, y1, x2, y2, score, label, confidence, then a column per class."""
        out = []
        for k, f in enumerate(self.faces):
            row = {"photo": self.path or "", "face": k, **dict(zip(("x1", "y1", "x2", "y2"),
                                                                   (round(float(v), 1) for v in f.box))),
                   "score": round(f.score, 4), "label": f.label, "confidence": round(f.confidence, 4)}
            row.update({c: round(float(p), 4) for c, p in f.probs.items()})
            out.append(row)
        return out

    def __repr__(self) -> str:
        faces = ", ".join(f"{f.label} {f.confidence:.2f}" for f in self.faces) or "no face"
        return f"PhotoPrediction({self.path or 'array'}, {len(self.faces)} face(s): {faces})"


def read_photo(image) -> np.ndarray:
    """uint8 [H,W,3] RGB from a path, a PIL image, or an array ([H,W] grey, [H,W,3] or [H,W,4])."""
    from PIL import Image, ImageOps

    if isinstance(image, (str, Path)):
        path = Path(image).expanduser()
        if not path.is_file():
            raise PredictError(f"no image file {path}")
        from ferlib.data.base import DECODE_ERRORS, skip_reason

        try:
            with Image.open(path) as im:
                image = ImageOps.exif_transpose(im).convert("RGB")
        except DECODE_ERRORS as e:
            raise UnreadablePhotoError(path, skip_reason(e), str(e) or type(e).__name__) from None
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise PredictError(f"expected an image [H,W,3], got an array of shape {arr.shape}")
    return np.ascontiguousarray(arr[..., :3].astype(np.uint8))


def square_box(box, scale: float = 1.0) -> tuple:
    """The square (side = the longer side × ``scale``) with the centre of ``box`` (x1, y1, x2, y2)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    cx, cy, half = (x1 + x2) / 2, (y1 + y2) / 2, max(x2 - x1, y2 - y1) * scale / 2
    return cx - half, cy - half, cx + half, cy + half


def crop_face(img: np.ndarray, box, points5, style: str = "aligned", size: int | None = None) -> np.ndarray:
    """uint8 [S,S,3] crop of one face, the way ``style``'s training data was cropped (see the module doc)."""
    import cv2

    from ferlib.data.align import align_face

    if style not in CROP_SIZES:
        raise ValueError(f"crop style must be one of {sorted(CROP_SIZES)}, got {style!r}")
    size = size or CROP_SIZES[style]
    if style == "aligned":
        return align_face(img, points5, size)
    x1, y1, x2, y2 = square_box(box)
    side = max(1.0, x2 - x1)
    # an affine map of the square onto size×size; outside the photo is black (as the aligned crops)
    M = np.array([[size / side, 0, -x1 * size / side], [0, size / side, -y1 * size / side]])
    out = cv2.warpAffine(img, M, (size, size), flags=cv2.INTER_AREA if side > size else cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
    if style == "grey48":
        grey = cv2.cvtColor(out, cv2.COLOR_RGB2GRAY)
        out = np.repeat(grey[..., None], 3, axis=2)
    return out


class Predictor:
    """``predictor(photo)`` → :class:`PhotoPrediction` (per face: box, 5 landmarks, probabilities by class name).

    Build it with :meth:`from_run` or :meth:`from_weights`; ``model`` is an eval-mode ferlib model, ``recipe`` the
    recipe whose eval transform it expects, ``classes`` its output names in index order, ``crop`` a style of
    ``CROP_SIZES`` (default: the ``face_crop`` of ``recipe``'s dataset's record)."""

    def __init__(self, model, recipe, classes, crop: str | None = None, device: str = "cpu", detector=None,
                 min_face_prob: float = 0.9):
        from ferlib.data.transforms import build_batch_transform
        from ferlib.engine.env import resolve_device

        if len(classes) != recipe.num_classes:
            raise PredictError(f"{len(classes)} class names for a {recipe.num_classes}-class model")
        self.device = resolve_device(device)
        self.model = model.eval().to(self.device)
        self.recipe = recipe
        self.classes = [str(c) for c in classes]
        base = getattr(recipe, "base_recipe", None) if recipe.dataset == "imagefolder" else None
        self.crop = crop or face_crop(base or recipe.dataset)
        if self.crop not in CROP_SIZES:
            raise PredictError(f"crop style must be one of {sorted(CROP_SIZES)}, got {self.crop!r}")
        self.transform = build_batch_transform(recipe, train=False).to(self.device)
        self._detector = detector
        self.min_face_prob = min_face_prob

    # --- construction ---
    @classmethod
    def from_run(cls, run_dir, checkpoint: str = "best", **kw) -> "Predictor":
        """A run directory of ``ferlib.engine.train``: its model and recipe from ``<checkpoint>.pt``, class names from the
        checkpoint (``classes``) or the run's ``config.yaml`` (``data.train.classes``); the face crop from the
        checkpoint's ``preprocessing.face_crop`` when it has one, else from the recipe's dataset."""
        from ferlib.engine.training import load_run
        from ferlib.evaluation import run_classes

        run_dir = Path(run_dir)
        if not (run_dir / f"{checkpoint}.pt").is_file():
            raise PredictError(f"{run_dir / (checkpoint + '.pt')} not found: is {run_dir} a trained run directory?")
        model, recipe = load_run(run_dir, checkpoint)
        from ferlib.run_dir import RunDir

        if RunDir(run_dir).in_progress():  # best.pt is replaced atomically: the last complete one was read
            print(f"{run_dir} is still in progress ({RunDir(run_dir).lock_holder()}): using its last complete "
                  f"{checkpoint}.pt", flush=True)
        head = torch.load(run_dir / f"{checkpoint}.pt", map_location="cpu", weights_only=True, mmap=True)
        classes = run_classes(run_dir, head)
        if classes is None:
            from ferlib.data import dataset_info
            from ferlib.recipes import paper_order

            native = dataset_info(recipe.dataset).label_set
            classes = list(paper_order(recipe.paper, recipe.dataset, native.names if native else None))
        crop = (head.get("preprocessing") or {}).get("face_crop")  # when the checkpoint states it
        if crop in CROP_SIZES and kw.get("crop") is None:
            kw["crop"] = crop
        return cls(model, recipe, classes, **kw)

    @classmethod
    def from_weights(cls, weights, model: str | None = None, dataset: str | None = None, **kw) -> "Predictor":
        """A ``ferlib.weights`` entry (or a checkpoint file; ``model`` names its model when the registry does not
        know the file): the entry's model, preprocessing and class order (``ferlib.evaluation.model_from_weights``)."""
        from ferlib.evaluation import model_from_weights

        net, recipe, classes, _ = model_from_weights(weights, model, dataset)
        return cls(net, recipe, classes, **kw)

    def __repr__(self) -> str:
        r = self.recipe
        return (f"Predictor({r.paper} / {r.model} trained on {r.dataset}: {len(self.classes)} classes {self.classes}, "
                f"faces cropped '{self.crop}', input {r.input_size}×{r.input_size} {r.color_order})")

    @property
    def demonstration_only(self) -> bool:
        """True for a model trained on the synthetic faces: a demonstration, not a classifier of real expressions."""
        return self.recipe.dataset == "synthetic"

    # --- prediction ---
    @property
    def detector(self):
        if self._detector is None:
            from ferlib.data.align import MTCNNDetector

            self._detector = MTCNNDetector(min_prob=self.min_face_prob)
        return self._detector

    @torch.no_grad()
    def classify_crops(self, crops: np.ndarray) -> np.ndarray:
        """Probabilities float [N,C] for uint8 face crops [N,S,S,3] (already cropped the predictor's way)."""
        x = torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).to(self.device)
        logits = self.model(self.transform(x)).logits.float()
        return torch.softmax(logits, dim=1).cpu().numpy()

    def __call__(self, image, keep_crops: bool = True) -> PhotoPrediction:
        img = read_photo(image)
        path = str(image) if isinstance(image, (str, Path)) else None
        faces = self.detector.detect(img)
        if not faces:
            return PhotoPrediction(img, [], self.classes, path)
        crops = np.stack([crop_face(img, f.box, f.points, self.crop) for f in faces])
        probs = self.classify_crops(crops)
        out = [FacePrediction(tuple(float(v) for v in f.box), f.points, float(f.prob),
                              dict(zip(self.classes, (float(p) for p in pr))), c if keep_crops else None)
               for f, pr, c in zip(faces, probs, crops)]
        return PhotoPrediction(img, out, self.classes, path)


def demo_photo() -> Path:
    """A real photo with a face that ships inside an installed package: matplotlib's sample portrait of
    Grace Hopper (``mpl-data/sample_data/grace_hopper.jpg``; an official U.S. Navy photograph, in the public
    domain). Nothing is downloaded."""
    import matplotlib.cbook

    return Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))


# --- drawing -------------------------------------------------------------------------------------------


def draw_predictions(result: PhotoPrediction, ax=None, bars: bool = True, top: int = 3):
    """The photo with each face's box, landmarks and top class, and (``bars``) a small bar chart of its
    ``top`` probabilities beside the box. Returns the matplotlib Figure."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    h, w = result.image.shape[:2]
    if ax is None:
        fig, ax = plt.subplots(figsize=(min(12, 6 * w / h + 1), 6))
    fig = ax.figure
    ax.imshow(result.image)
    ax.set_axis_off()
    colours = plt.cm.tab10.colors
    for k, f in enumerate(result.faces):
        c = colours[k % len(colours)]
        x1, y1, x2, y2 = f.box
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, lw=2, ec=c))
        ax.plot(f.landmarks[:, 0], f.landmarks[:, 1], "o", ms=3, color=c)
        label = dict(s=f"{k}: {f.label} {f.confidence:.0%}", color="white", fontsize=9, gid=f"face-label-{k}",
                     bbox=dict(facecolor=c, alpha=0.8, pad=1.5, lw=0), zorder=6)  # above the panels (zorder 5)
        bars_above = False
        if bars:
            names = sorted(f.probs, key=f.probs.get, reverse=True)[:top]
            # under the box (above it when the photo ends first), as wide as the box: clear of side-by-side faces
            bw = min(max((x2 - x1) * 0.8, w * 0.12), w - 0.0) / w
            bh = min(0.05 * len(names) + 0.02, 0.3)
            left = min(max(0.0, x1 / w + 0.04 * bw), 1 - bw)
            below = 1 - (y2 + 0.02 * h) / h - bh
            bars_above = below < 0
            bottom = below if not bars_above else min(1 - bh, 1 - (y1 - 0.02 * h) / h)
            inset = ax.inset_axes([left, bottom, bw, bh])
            inset.barh(range(len(names)), [f.probs[n] for n in names], color=c, alpha=0.6)
            for j, n in enumerate(names):  # the class and its probability written on its bar
                inset.text(0.02, j, f"{n} {f.probs[n]:.0%}", va="center", ha="left", fontsize=7)
            inset.set_xlim(0, 1)
            inset.set_ylim(len(names) - 0.5, -0.5)
            inset.set_xticks([])
            inset.set_yticks([])
            inset.patch.set_alpha(0.85)
        # the label on the side of the box the bars leave free: above it, or along its lower edge when the bars
        # had to go above (no room under the face), never under the bar panel
        if bars_above:
            ax.text(x1, min(y2, h) - 2, va="bottom", **label)
        else:
            ax.text(x1, max(0, y1 - 4), va="bottom", **label)
    title = Path(result.path).name if result.path else ""
    ax.set_title(f"{title} — {len(result.faces)} face(s)" if title else f"{len(result.faces)} face(s)")
    return fig


def plot_probabilities(result: PhotoPrediction, max_faces: int = 6):
    """One horizontal bar chart per face (every class, in the model's order) beside its crop. Returns the Figure."""
    import matplotlib.pyplot as plt

    faces = result.faces[:max_faces]
    n = max(1, len(faces))
    fig, axes = plt.subplots(n, 2, figsize=(8, 2.2 * n), squeeze=False, gridspec_kw={"width_ratios": [1, 3]})
    if not faces:
        axes[0, 0].set_axis_off()
        axes[0, 1].set_axis_off()
        axes[0, 1].text(0.5, 0.5, "no face found", ha="center", va="center")
    for k, f in enumerate(faces):
        axes[k, 0].imshow(f.crop if f.crop is not None else np.zeros((8, 8, 3), np.uint8))
        axes[k, 0].set_axis_off()
        axes[k, 0].set_title(f"face {k}", fontsize=9)
        names = list(f.probs)
        colours = ["tab:orange" if c == f.label else "tab:blue" for c in names]
        axes[k, 1].barh(names, [f.probs[c] for c in names], color=colours)
        axes[k, 1].set_xlim(0, 1)
        axes[k, 1].invert_yaxis()
        axes[k, 1].set_xlabel("probability" if k == n - 1 else "")
    fig.tight_layout()
    return fig


# --- command line --------------------------------------------------------------------------------------


def list_photos(inputs) -> tuple[list[Path], bool]:
    """``(photos, any_folder)``: the image files named, and those directly inside the folders named (sorted)."""
    photos, folder = [], False
    for item in inputs:
        p = Path(item).expanduser()
        if p.is_dir():
            folder = True
            photos += sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMG_EXTENSIONS)
        elif p.is_file():
            photos.append(p)
        else:
            raise PredictError(f"no such photo or folder: {p}")
    if not photos:
        raise PredictError(f"no images ({', '.join(IMG_EXTENSIONS)}) in {', '.join(map(str, inputs))}")
    return photos, folder


def skipped_row(err: UnreadablePhotoError) -> dict:
    """The table / CSV row of a photo that was skipped: ``skipped`` says why."""
    return {"photo": str(err.path), "face": None, "skipped": f"{err.reason} ({err.detail})"}


def format_table(rows: list[dict], classes: list[str]) -> str:
    """The terminal table: photo, face, box, top class and every class's probability (a skipped photo: why)."""
    head = ["photo", "face", "box (x1,y1,x2,y2)", "top class", "p"] + classes
    lines = []
    for r in rows:
        if r.get("skipped"):
            lines.append([Path(r["photo"]).name, "-", f"skipped: {r['skipped']}", "", ""] + [""] * len(classes))
            continue
        if r.get("face") is None:
            lines.append([Path(r["photo"]).name, "-", "no face found", "", ""] + [""] * len(classes))
            continue
        box = f"{r['x1']:.0f},{r['y1']:.0f},{r['x2']:.0f},{r['y2']:.0f}"
        lines.append([Path(r["photo"]).name, str(r["face"]), box, r["label"], f"{r['confidence']:.2f}"]
                     + [f"{r[c]:.2f}" for c in classes])
    widths = [max(len(x[i]) for x in lines + [head]) for i in range(len(head))]
    return "\n".join("  ".join(v.ljust(wd) for v, wd in zip(x, widths)).rstrip() for x in [head] + lines)
