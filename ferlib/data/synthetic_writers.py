"""Write the synthetic faces in the official dataset layouts (docs/design.md §6): one writer per format.

A writer is ``write_<format>(root, cfg, samples) -> truth``: ``samples(split, desc)`` iterates ``(i, image,
landmarks, true, label, aus)`` (labels in the canonical order) and ``truth`` maps each written image name to
its true label. A dataset offers itself as a synthetic format by naming its writer in its record
(``register_dataset(..., synthetic_format=SyntheticFormat(write_rafdb, num_classes=7))``); a new dataset's
writer may live in its own reader file. :func:`ferlib.data.synthetic_faces.generate` renders the faces and calls
:func:`write` with the record's writer; this module knows file layouts, not faces, and imports nothing of
the renderer. The writers here:

- ``rafdb`` — ``EmoLabel/list_patition_label.txt`` (labels 1..7) and ``Image/aligned/*_aligned.jpg``,
  plus ``synthetic_landmarks.npz``; 7 classes only.
- ``affectnet`` — ``Manually_Annotated_file_lists/{training,validation}.csv`` with face boxes, 68-landmark
  strings (``x0;y0;…``) and valence/arousal, images in ``Manually_Annotated_Images/<subdir>/<56 hex>.jpg``
  (each face is padded into a larger photo so the box crop gives the rendered face back). 8 classes when
  ``cfg.num_classes == 8``.
- ``ferplus`` — ``fer2013new.csv`` with 10 vote counts per image (the written label always holds ≥ 6 votes,
  so the majority label is the written label) and ``fer2013.csv`` holding the 48×48 grey pixels.
- ``fer2013`` — ``fer2013.csv`` (``emotion,pixels,Usage``); 7 classes only.
- ``imagefolder`` — ``train/<class>/``, ``test/<class>/`` with canonical class names.

Splits: the generator's ``train`` → Training / training.csv; its ``test`` → RAF-DB's test, validation.csv
(AffectNet), or first half PublicTest and second half PrivateTest (FERPlus, FER2013).
``synthetic_truth.json`` maps every image name to its true (noise-free) canonical label.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from PIL import Image

from ferlib.labels import CANONICAL, FER2013, FERPLUS, RAFDB, canonical_name

#: Rough valence/arousal per expression (circumplex model), for AffectNet's columns.
VALENCE_AROUSAL = {"neutral": (0.0, 0.0), "happy": (0.75, 0.35), "sad": (-0.65, -0.3), "surprise": (0.2, 0.8),
                   "fear": (-0.55, 0.7), "disgust": (-0.6, 0.35), "anger": (-0.6, 0.6), "contempt": (-0.4, 0.2)}


def stamp(fmt: str, cfg) -> dict:
    """What ``root/synthetic.json`` records: a set with the same stamp is not written again."""
    return {"format": fmt, "config": cfg.__dict__}


def write(root, fmt: str, cfg, samples, writer) -> Path:
    """Write ``samples`` under ``root`` with ``writer`` (format ``fmt``), with ``synthetic_truth.json`` and the
    stamp; returns ``root``."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    truth = writer(root, cfg, samples)
    (root / "synthetic_truth.json").write_text(json.dumps(truth))
    (root / "synthetic.json").write_text(json.dumps(stamp(fmt, cfg)))
    return root


def write_rafdb(root: Path, cfg, samples):
    if cfg.num_classes != 7:
        raise ValueError("RAF-DB has 7 classes; use num_classes=7 for fmt='rafdb'")
    (root / "EmoLabel").mkdir(parents=True, exist_ok=True)
    (root / "Image" / "aligned").mkdir(parents=True, exist_ok=True)
    lines, landmarks, truth = [], {}, {}
    for split, prefix, digits in (("train", "train_", 5), ("test", "test_", 4)):
        for i, img, lm, true, label, _ in samples(split, f"synthetic {split}"):
            stem = f"{prefix}{i + 1:0{digits}d}"
            Image.fromarray(img).save(root / "Image" / "aligned" / f"{stem}_aligned.jpg", quality=cfg.jpeg_quality)
            lines.append(f"{stem}.jpg {RAFDB.index(CANONICAL[label]) + 1}")
            landmarks[stem] = lm
            truth[stem] = true
    (root / "EmoLabel" / "list_patition_label.txt").write_text("\n".join(lines) + "\n")
    np.savez_compressed(root / "synthetic_landmarks.npz", **landmarks)
    return truth


def hex_name(split: str, i: int, seed: int) -> str:
    return hashlib.sha256(f"{seed}/{split}/{i}".encode()).hexdigest()[:56]


def landmark_string(lm: np.ndarray) -> str:
    return ";".join(f"{v:.2f}" for v in np.asarray(lm, np.float64).ravel())


def pad_into_photo(img: np.ndarray, lm: np.ndarray, i: int):
    """Place a rendered face into a larger photo (reflected border); returns ``(photo, landmarks, box)``
    with box = (x, y, w, h) of the original face inside the photo."""
    s = img.shape[0]
    left, top = s // 4 + i % 7, s // 4 + (3 * i) % 5
    right, bottom = s // 4, s // 4 + i % 3
    import cv2  # here, not at the top: importing ferlib.data must not need OpenCV

    photo = cv2.copyMakeBorder(img, top, bottom, left, right, cv2.BORDER_REFLECT_101)
    return photo, lm + np.array([left, top], np.float32), (left, top, s, s)


def write_affectnet(root: Path, cfg, samples):
    lists, images = root / "Manually_Annotated_file_lists", root / "Manually_Annotated_Images"
    lists.mkdir(parents=True, exist_ok=True)
    header = ("subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,"
              "arousal")
    truth = {}
    for split, csv_name in (("train", "training.csv"), ("test", "validation.csv")):
        lines = [header]
        for i, img, lm, true, label, _ in samples(split, f"synthetic affectnet {split}"):
            rel = f"{i // 100}/{hex_name(split, i, cfg.seed)}.jpg"
            photo, lm2, box = pad_into_photo(img, lm, i)
            (images / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(photo).save(images / rel, quality=cfg.jpeg_quality)
            v, a = VALENCE_AROUSAL[CANONICAL[label]]
            lines.append(f"{rel},{box[0]},{box[1]},{box[2]},{box[3]},{landmark_string(lm2)},{label},{v:.3f},{a:.3f}")
            truth[rel] = true
        (lists / csv_name).write_text("\n".join(lines) + "\n")
    return truth


def _splits_with_usage(cfg, samples, desc):
    """Generator ``train`` → Training; ``test`` first half → PublicTest, rest → PrivateTest."""
    half = cfg.n_test // 2
    for split in ("train", "test"):
        for i, img, lm, true, label, aus in samples(split, f"synthetic {desc} {split}"):
            usage = "Training" if split == "train" else ("PublicTest" if i < half else "PrivateTest")
            yield usage, split, i, img, true, label


def grey48(img: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.resize(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), (48, 48), interpolation=cv2.INTER_AREA)


def votes_for(label: int, split: str, i: int, cfg) -> list[int]:
    """10 FER+ vote counts (column order) whose majority is ``label`` (≥ 6 votes), the rest spread."""
    rng = np.random.default_rng([cfg.seed, 0 if split == "train" else 1, i, 77])
    col = FERPLUS.index(next(n for n in FERPLUS if canonical_name(n) == CANONICAL[label]))
    v = np.zeros(10, int)
    v[col] = int(rng.integers(6, 11))
    others = [c for c in range(10) if c != col and (cfg.num_classes == 8 or c != 7)]
    for _ in range(10 - v[col]):
        v[rng.choice(others)] += 1
    return v.tolist()


def _fer2013_code(label: int) -> int:
    name = CANONICAL[label]
    return next(k for k, n in enumerate(FER2013) if canonical_name(n) == name) if name != "contempt" else 6


def write_ferplus(root: Path, cfg, samples):
    new = ["Usage,Image name," + ",".join(FERPLUS) + ",unknown,NF"]
    pix = ["emotion,pixels,Usage"]
    truth = {}
    for n, (usage, split, i, img, true, label) in enumerate(_splits_with_usage(cfg, samples, "ferplus")):
        name = f"fer{n:07d}.png"
        new.append(f"{usage},{name}," + ",".join(map(str, votes_for(label, split, i, cfg))))
        pix.append(f"{_fer2013_code(label)},{' '.join(map(str, grey48(img).ravel()))},{usage}")
        truth[name] = true
    (root / "fer2013new.csv").write_text("\n".join(new) + "\n")
    (root / "fer2013.csv").write_text("\n".join(pix) + "\n")
    return truth


def write_fer2013(root: Path, cfg, samples):
    if cfg.num_classes != 7:
        raise ValueError("FER2013 has 7 classes; use num_classes=7 for fmt='fer2013'")
    pix = ["emotion,pixels,Usage"]
    truth = {}
    for n, (usage, split, i, img, true, label) in enumerate(_splits_with_usage(cfg, samples, "fer2013")):
        pix.append(f"{_fer2013_code(label)},{' '.join(map(str, grey48(img).ravel()))},{usage}")
        truth[str(n)] = true
    (root / "fer2013.csv").write_text("\n".join(pix) + "\n")
    return truth


def write_imagefolder(root: Path, cfg, samples):
    truth = {}
    for split in ("train", "test"):
        for name in CANONICAL[:cfg.num_classes]:  # every class folder, so both splits list the same classes
            (root / split / name).mkdir(parents=True, exist_ok=True)
        for i, img, lm, true, label, _ in samples(split, f"synthetic imagefolder {split}"):
            d = root / split / CANONICAL[label]
            d.mkdir(parents=True, exist_ok=True)
            name = f"{split}_{i:05d}.jpg"
            Image.fromarray(img).save(d / name, quality=cfg.jpeg_quality)
            truth[f"{split}/{CANONICAL[label]}/{name}"] = true
    return truth
