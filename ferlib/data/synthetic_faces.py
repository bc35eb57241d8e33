"""The synthetic face renderer: face-expression images driven by FACS action units (docs/design.md §6).

Each face is drawn from identity parameters (face shape, skin tone, feature placement, pose,
position, lighting, background, noise) and an expression given by action-unit (AU) intensities.
Neighbouring expressions share units (fear/surprise: AU1+2+5+26; disgust/anger/sadness: AU4, AU15),
intensities vary per sample and every face carries small random "leak" AUs, so the task is learnable
but not trivial. Generation is deterministic: sample ``i`` of split ``s`` depends only on
``(seed, s, i)``.

``generate(root, fmt="rafdb")`` renders the faces and has the writer named by dataset ``fmt``'s record
(:mod:`ferlib.data.synthetic_writers`) write them in its official layout (RAF-DB's basic layout by default:
``EmoLabel/list_patition_label.txt``, ``Image/aligned/*_aligned.jpg`` 100×100).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ferlib.labels import CANONICAL

from . import synthetic_writers
from .base import show_progress

#: Prototypical AUs (EMFACS) with relative intensities; "12R"/"14R" are unilateral (right corner).
PROTOTYPES: dict[str, dict[str, float]] = {
    "neutral": {},
    "happy": {"6": 0.8, "12": 1.0},
    "sad": {"1": 0.9, "4": 0.6, "15": 0.9},
    "surprise": {"1": 1.0, "2": 1.0, "5": 0.9, "26": 1.0},
    "fear": {"1": 0.9, "2": 0.6, "4": 0.6, "5": 0.9, "7": 0.4, "20": 0.9, "26": 0.6},
    "disgust": {"9": 1.0, "15": 0.6, "16": 0.7},
    "anger": {"4": 1.0, "5": 0.5, "7": 0.8, "23": 0.9},
    "contempt": {"12R": 0.9, "14R": 0.8},
}
ALL_AUS = ("1", "2", "4", "5", "6", "7", "9", "12", "12R", "14R", "15", "16", "20", "23", "26")

#: RAF-DB's class counts (train + test) per expression, for the default imbalance (contempt: AffectNet-like share).
RAFDB_COUNTS = {"surprise": 1619, "fear": 355, "disgust": 877, "happy": 5957, "sad": 2460,
                "anger": 867, "neutral": 3204, "contempt": 600}


@dataclass(frozen=True)
class SyntheticConfig:
    """Knobs of the generator. ``intensity`` scales every AU (lower = subtler = harder)."""

    n_train: int = 2400
    n_test: int = 600
    size: int = 100
    num_classes: int = 7          # 7 basic expressions, 8 with contempt
    seed: int = 0
    intensity: float = 1.0
    intensity_jitter: float = 0.35  # per-sample intensity is intensity * U(1 - jitter, 1)
    leak: float = 0.12            # std of random intensity on every AU
    label_noise: float = 0.03     # probability that the written label is another class
    imbalance: bool = True        # RAF-DB-like class balance
    jpeg_quality: int = 92


def class_names(num_classes: int = 7) -> tuple[str, ...]:
    """The first ``num_classes`` expressions of the canonical order (AffectNet's native order, ferlib.labels)."""
    return CANONICAL[:num_classes]


def class_probs(cfg: SyntheticConfig) -> np.ndarray:
    names = class_names(cfg.num_classes)
    w = np.array([RAFDB_COUNTS[n] if cfg.imbalance else 1.0 for n in names], dtype=np.float64)
    return w / w.sum()


def split_labels(cfg: SyntheticConfig, split: str) -> np.ndarray:
    """True expression index (canonical order) of every sample of a split, as exact class quotas."""
    n = cfg.n_train if split == "train" else cfg.n_test
    p = class_probs(cfg)
    counts = np.floor(p * n).astype(int)
    counts[np.argsort(-(p * n - counts))[: n - counts.sum()]] += 1
    labels = np.repeat(np.arange(len(p)), counts)
    rng = np.random.default_rng([cfg.seed, 0 if split == "train" else 1, 999])
    return rng.permutation(labels)


def sample_aus(expression: str, rng: np.random.Generator, cfg: SyntheticConfig) -> dict[str, float]:
    """AU intensities in [0, 1] for one face: scaled prototype + small leaks on every unit."""
    scale = cfg.intensity * rng.uniform(1 - cfg.intensity_jitter, 1.0)
    aus = {au: max(0.0, rng.normal(0.0, cfg.leak)) for au in ALL_AUS}
    for au, v in PROTOTYPES[expression].items():
        aus[au] = min(1.0, aus[au] + v * scale * rng.uniform(0.8, 1.2))
    return aus


def sample_identity(rng: np.random.Generator) -> dict[str, float]:
    """Identity and capture parameters: shape, tone, placement, pose, lighting, noise."""
    tone = rng.uniform(0.25, 0.95)
    return {
        "face_w": rng.uniform(0.30, 0.38), "face_h": rng.uniform(0.40, 0.48),
        "eye_x": rng.uniform(0.12, 0.16), "eye_y": rng.uniform(-0.09, -0.03), "eye_w": rng.uniform(0.05, 0.07),
        "eye_open": rng.uniform(0.018, 0.03), "brow_gap": rng.uniform(0.06, 0.09), "brow_w": rng.uniform(2.0, 4.0),
        "nose_len": rng.uniform(0.12, 0.17), "mouth_y": rng.uniform(0.20, 0.26), "mouth_w": rng.uniform(0.09, 0.13),
        "lip": rng.uniform(0.012, 0.025),
        "skin": tuple(float(c) for c in np.array([0.55 + 0.4 * tone, 0.42 + 0.4 * tone, 0.32 + 0.45 * tone])
                      * rng.uniform(0.9, 1.05, 3)),
        "bg": tuple(float(c) for c in rng.uniform(0.05, 0.95, 3)),
        "hair": tuple(float(c) for c in rng.uniform(0.0, 0.4, 3)), "hair_h": rng.uniform(0.0, 0.2),
        "angle": rng.normal(0, 9.0), "scale": rng.uniform(0.8, 1.1),
        "tx": rng.normal(0, 0.07), "ty": rng.normal(0, 0.06),
        "light_dir": rng.uniform(0, 2 * math.pi), "light": rng.uniform(0.0, 0.35),
        "noise": rng.uniform(0.01, 0.05), "blur": rng.uniform(0.0, 1.0),
    }


def render_face(identity: dict, aus: dict, size: int = 100, rng: np.random.Generator | None = None):
    """Draw one face. Returns ``(image uint8 [size,size,3] RGB, landmarks float32 [68,2] in pixels)``.

    Coordinates are in a face frame (unit = image size, origin at the face centre, y down), then
    rotated/scaled/shifted by the pose parameters. Landmarks follow the iBUG 68-point scheme.
    """
    import cv2  # here, not at the top: importing ferlib.data must not need OpenCV

    rng = rng or np.random.default_rng(0)
    ss = 3  # supersampling for anti-aliased shapes
    S = size * ss
    idn, a = identity, (lambda k: float(aus.get(k, 0.0)))
    th = math.radians(idn["angle"])
    R = np.array([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]]) * idn["scale"]
    centre = np.array([0.5 + idn["tx"], 0.52 + idn["ty"]])

    def P(pts):  # face frame -> supersampled pixel coords
        pts = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
        return (pts @ R.T + centre) * S

    def ipts(pts):
        return np.round(P(pts)).astype(np.int32)

    img = np.empty((S, S, 3), np.float32)
    img[:] = idn["bg"]
    skin = np.array(idn["skin"], np.float32)
    dark = skin * 0.35
    fw, fh = idn["face_w"], idn["face_h"]
    t = np.linspace(0, 2 * math.pi, 64, endpoint=False)
    oval = np.stack([fw * np.sin(t), -fh * np.cos(t) * np.where(np.cos(t) < 0, 0.92, 1.0)], 1)
    if idn["hair_h"] > 0.02:
        hair = np.stack([1.08 * fw * np.sin(t), -fh * 1.0 - idn["hair_h"] * np.clip(np.cos(t), 0, 1) + 0.05], 1)
        cv2.fillPoly(img, [ipts(hair[np.cos(t) > -0.1])], idn["hair"], cv2.LINE_AA)
    cv2.fillPoly(img, [ipts(oval)], skin.tolist(), cv2.LINE_AA)
    lw = max(1, int(round(0.012 * S)))

    # Eyes (AU5 raises upper lid, AU7 tightens lids, AU6 pushes lower lid up).
    lm = np.zeros((68, 2))
    ex, ey, ew = idn["eye_x"], idn["eye_y"], idn["eye_w"]
    up = idn["eye_open"] * (1 + 1.1 * a("5") - 0.5 * a("7") - 0.35 * a("6"))
    low = idn["eye_open"] * 0.7 * (1 + 0.3 * a("5") - 0.6 * a("7") - 0.7 * a("6"))
    for side, base in ((-1, 36), (1, 42)):
        cx = side * ex
        xs = np.linspace(-ew, ew, 25)
        top = np.stack([cx + xs, ey - up * np.sqrt(np.clip(1 - (xs / ew) ** 2, 0, 1))], 1)
        bot = np.stack([cx + xs[::-1], ey + max(low, 0.002) * np.sqrt(np.clip(1 - (xs[::-1] / ew) ** 2, 0, 1))], 1)
        cv2.fillPoly(img, [ipts(np.concatenate([top, bot]))], (0.95, 0.95, 0.95), cv2.LINE_AA)
        cv2.circle(img, tuple(ipts([cx, ey + 0.2 * (low - up)])[0]), int(0.022 * S * idn["scale"]), (0.1, 0.08, 0.06), -1, cv2.LINE_AA)
        cv2.polylines(img, [ipts(top)], False, dark.tolist(), lw, cv2.LINE_AA)
        lm[base:base + 6] = [top[0], top[8], top[16], top[24], bot[8], bot[16]]
        if a("6") > 0.1:  # cheek raiser: crease under the eye
            cheek = np.stack([cx + xs * 1.1, ey + low + 0.03 + 0.01 * (xs / ew) ** 2], 1)
            cv2.polylines(img, [ipts(cheek)], False, (skin * (1 - 0.35 * a("6"))).tolist(), lw, cv2.LINE_AA)

    # Brows: AU1 inner up, AU2 outer up, AU4 down and together.
    for side, base in ((-1, 17), (1, 22)):
        inner = np.array([side * (ex - 0.055 + 0.02 * a("4")), ey - idn["brow_gap"] - 0.05 * a("1") + 0.035 * a("4")])
        outer = np.array([side * (ex + 0.075), ey - idn["brow_gap"] + 0.01 - 0.05 * a("2") + 0.01 * a("4")])
        mid = (inner + outer) / 2 + np.array([0, -0.015 - 0.01 * a("2")])
        pts = np.array([(1 - u) ** 2 * inner + 2 * u * (1 - u) * mid + u ** 2 * outer for u in np.linspace(0, 1, 12)])
        cv2.polylines(img, [ipts(pts)], False, (np.array(idn["hair"]) * 0.8).tolist(),
                      int(idn["brow_w"] * ss), cv2.LINE_AA)
        sel = pts[[11, 8, 5, 3, 0]] if side < 0 else pts[[0, 3, 5, 8, 11]]
        lm[base:base + 5] = sel
        if a("4") > 0.15:  # vertical furrow between brows
            cv2.line(img, tuple(ipts([side * 0.012, ey - 0.07])[0]), tuple(ipts([side * 0.01, ey - 0.02])[0]),
                     (skin * (1 - 0.3 * a("4"))).tolist(), lw, cv2.LINE_AA)

    # Nose; AU9 wrinkles the bridge and lifts the nostrils.
    nl = idn["nose_len"]
    lift = 0.02 * a("9")
    lm[27:31] = [[0, ey + 0.01 + k * (nl - lift) / 3] for k in range(4)]
    nos = [[-0.035, ey + nl - lift + 0.005], [-0.018, ey + nl - lift + 0.015], [0, ey + nl - lift + 0.02],
           [0.018, ey + nl - lift + 0.015], [0.035, ey + nl - lift + 0.005]]
    lm[31:36] = nos
    cv2.polylines(img, [ipts(lm[27:31])], False, (skin * 0.75).tolist(), lw, cv2.LINE_AA)
    cv2.polylines(img, [ipts(nos)], False, (skin * 0.6).tolist(), lw, cv2.LINE_AA)
    for k in range(int(round(4 * a("9")))):  # bridge wrinkles
        y = ey + 0.015 + 0.012 * k
        cv2.line(img, tuple(ipts([-0.025, y])[0]), tuple(ipts([0.025, y + 0.004])[0]), (skin * 0.65).tolist(), lw, cv2.LINE_AA)

    # Mouth: AU12 corners up, AU15 corners down, AU20 stretch, AU23 tighten, AU16 lower lip down,
    # AU26 jaw drop, unilateral AU12R/AU14R raise/dimple the right corner only (contempt).
    my = ey + idn["mouth_y"] + 0.08 * a("26") * 0.3
    mw = idn["mouth_w"] * (1 + 0.3 * a("20") + 0.2 * a("12") - 0.2 * a("23") + 0.1 * a("12R"))
    cl = -0.045 * a("12") + 0.04 * a("15") + 0.01 * a("20")
    cr = cl - 0.045 * a("12R") - 0.01 * a("14R")
    opening = 0.09 * a("26") + 0.025 * a("16") + 0.01 * a("20")
    lip = idn["lip"] * (1 - 0.6 * a("23"))
    xs = np.linspace(-1, 1, 31)
    corner = np.where(xs < 0, cl, cr) * np.abs(xs) ** 2
    upper = np.stack([xs * mw, my + corner - 0.004 * (1 - xs ** 2) - lift * (1 - xs ** 2) * 0.5], 1)
    lower = np.stack([xs * mw, my + corner + opening * (1 - xs ** 2) ** 0.8], 1)
    lip_col = (skin * np.array([0.85, 0.55, 0.55])).tolist()
    if opening > 0.012:
        cv2.fillPoly(img, [ipts(np.concatenate([upper, lower[::-1]]))], (0.15, 0.05, 0.05), cv2.LINE_AA)
    cv2.polylines(img, [ipts(upper - [0, lip * 0.5])], False, lip_col, max(1, int(lip * S)), cv2.LINE_AA)
    cv2.polylines(img, [ipts(lower + [0, lip * 0.5])], False, lip_col, max(1, int(lip * S * 1.2)), cv2.LINE_AA)
    if a("14R") > 0.1:  # dimple at the right corner
        c = upper[-1]
        cv2.line(img, tuple(ipts(c + [0.012, -0.01])[0]), tuple(ipts(c + [0.018, 0.012])[0]),
                 (skin * (1 - 0.4 * a("14R"))).tolist(), lw, cv2.LINE_AA)
    lm[48:60] = np.concatenate([upper[[0, 5, 10, 15, 20, 25, 30]], lower[[25, 20, 15, 10, 5]]])
    lm[60:68] = np.concatenate([upper[[3, 10, 15, 20, 27]], lower[[20, 15, 10]]])
    jaw = np.linspace(1.5 * math.pi, 0.5 * math.pi, 17)  # left ear -> chin -> right ear
    lm[0:17] = np.stack([fw * np.sin(jaw), -fh * np.cos(jaw)], 1)
    # Lighting gradient, blur, downsample, noise.
    yy, xx = np.mgrid[0:S, 0:S].astype(np.float32) / S - 0.5
    grad = idn["light"] * (np.cos(idn["light_dir"]) * xx + np.sin(idn["light_dir"]) * yy)
    img = img * (1 + grad[..., None])
    if idn["blur"] > 0.3:
        img = cv2.GaussianBlur(img, (0, 0), idn["blur"] * ss)
    img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    img = img + rng.normal(0, idn["noise"], img.shape).astype(np.float32)
    out = np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)
    return out, (P(lm) / ss).astype(np.float32)


def make_sample(cfg: SyntheticConfig, split: str, index: int):
    """Sample ``index`` of ``split``: ``(image, landmarks, true_label, written_label, aus)`` (canonical order)."""
    true = int(split_labels(cfg, split)[index])
    rng = np.random.default_rng([cfg.seed, 0 if split == "train" else 1, index])
    aus = sample_aus(CANONICAL[true], rng, cfg)
    img, lm = render_face(sample_identity(rng), aus, cfg.size, rng)
    label = true
    if rng.random() < cfg.label_noise:
        label = int(rng.choice([c for c in range(cfg.num_classes) if c != true]))
    return img, lm, true, label, aus


def generate(root, fmt: str = "rafdb", cfg: SyntheticConfig | None = None, progress: bool = True, **kw) -> Path:
    """Write the synthetic set under ``root`` in dataset ``fmt``'s official layout, with the writer its record
    names (``ferlib.data.list_synthetic_formats()``); returns the dataset root.

    ``fmt="rafdb"`` writes ``root/EmoLabel/list_patition_label.txt`` and ``root/Image/aligned``. The classes
    drawn are ``cfg.num_classes`` (``load_dataset("synthetic", fmt=...)`` sets the record's, e.g. 8 for
    ``affectnet8``). Re-running with the same config is a no-op (``root/synthetic.json`` records it).
    """
    from .registry import dataset_info, list_synthetic_formats

    if fmt not in list_synthetic_formats():
        raise ValueError(f"unknown synthetic format {fmt!r}; available: {', '.join(list_synthetic_formats())}")
    writer = dataset_info(fmt).synthetic_format.write
    cfg = cfg or SyntheticConfig(**kw)
    root = Path(root)
    stamp = root / "synthetic.json"
    if stamp.exists() and json.loads(stamp.read_text()) == synthetic_writers.stamp(fmt, cfg):
        return root
    return synthetic_writers.write(root, fmt, cfg, lambda split, desc="": iter_split(cfg, split, progress, desc),
                                   writer)


def iter_split(cfg: SyntheticConfig, split: str, progress: bool = True, desc: str = ""):
    from tqdm.auto import tqdm

    n = cfg.n_train if split == "train" else cfg.n_test
    for i in tqdm(range(n), desc=desc or f"synthetic {split}", disable=not show_progress(progress), leave=False):
        yield (i,) + make_sample(cfg, split, i)
