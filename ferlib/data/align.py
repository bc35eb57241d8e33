"""Face alignment: a 5-point similarity transform onto the ArcFace template (112×112, or scaled to 100×100).

Points, in image order: left eye centre, right eye centre (as seen in the image), nose tip, left and right
mouth corners. From 68 iBUG landmarks (AffectNet's CSV, the synthetic generator) they are the means of
points 36–41 and 42–47, point 30, points 48 and 54. Without landmarks, MTCNN (facenet-pytorch, whose wheel
ships the weights: ``pip install --no-deps facenet-pytorch``) finds them; it is an optional dependency.

The 100×100 template is the 112×112 ArcFace template scaled by 100/112 (RAF-DB's own aligned crops come
from its authors' tool, which is not public).
"""
from __future__ import annotations

import numpy as np

#: ArcFace / InsightFace 5-point template for 112×112 crops (x, y in pixels).
ARCFACE_112 = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655],
                        [70.7299, 92.2041]], dtype=np.float64)

INSTALL_HINT = ("face detection needs facenet-pytorch (MTCNN; its wheel ships the weights, nothing is "
                "downloaded): pip install --no-deps facenet-pytorch")


def template(size: int = 112) -> np.ndarray:
    """The 5-point template for a ``size``×``size`` crop: float64 [5,2]."""
    return ARCFACE_112 * (size / 112.0)


def five_points(landmarks68) -> np.ndarray:
    """float64 [5,2] from 68 iBUG landmarks [68,2]: eye centres, nose tip, mouth corners."""
    lm = np.asarray(landmarks68, dtype=np.float64).reshape(68, 2)
    return np.stack([lm[36:42].mean(0), lm[42:48].mean(0), lm[30], lm[48], lm[54]])


def similarity_transform(src, dst) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation; no reflection) mapping ``src`` → ``dst``.

    Umeyama (1991). ``src``, ``dst``: [N,2]. Returns the 2×3 matrix ``M`` with ``dst ≈ src @ M[:, :2].T + M[:, 2]``.
    """
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s0, d0 = src - mu_s, dst - mu_d
    var_s = (s0 ** 2).sum() / len(src)
    cov = d0.T @ s0 / len(src)
    U, S, Vt = np.linalg.svd(cov)
    D = np.eye(2)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        D[1, 1] = -1
    R = U @ D @ Vt
    scale = (S * np.diag(D)).sum() / var_s
    t = mu_d - scale * R @ mu_s
    return np.hstack([scale * R, t[:, None]])


def align_face(img: np.ndarray, points5, size: int = 112) -> np.ndarray:
    """Warp ``img`` uint8 [H,W,3] so ``points5`` [5,2] land on the template; returns uint8 [size,size,3]."""
    import cv2

    M = similarity_transform(points5, template(size))
    return cv2.warpAffine(img, M, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)


class MTCNNDetector:
    """5 facial points of the most confident face with facenet-pytorch's MTCNN, or None when no face."""

    def __init__(self, device: str = "cpu", min_prob: float = 0.9):
        try:
            from facenet_pytorch import MTCNN
        except ImportError as e:
            raise ImportError(INSTALL_HINT) from e
        self.mtcnn = MTCNN(keep_all=True, device=device)
        self.min_prob = min_prob

    def __call__(self, img: np.ndarray):
        from PIL import Image

        boxes, probs, points = self.mtcnn.detect(Image.fromarray(img), landmarks=True)
        if boxes is None or points is None or len(boxes) == 0:
            return None
        # numpy 2: the arrays may come back with dtype=object; convert element-wise
        probs = np.array([float(p) if p is not None else 0.0 for p in np.asarray(probs).ravel()])
        best = int(np.argmax(probs))
        if probs[best] < self.min_prob:
            return None
        return np.asarray(np.stack([np.asarray(p, np.float64) for p in np.asarray(points[best])]), np.float64)


class FaceAligner:
    """``aligner(img, landmarks68=None)`` → aligned uint8 [size,size,3], or None when no face is found.

    Uses the given landmarks when there are any, else the detector (MTCNN by default, created on first use).
    """

    def __init__(self, size: int = 112, detector=None):
        self.size = size
        self.detector = detector

    def __call__(self, img: np.ndarray, landmarks68=None):
        if landmarks68 is not None:
            pts = five_points(landmarks68)
        else:
            if self.detector is None:
                self.detector = MTCNNDetector()
            pts = self.detector(img)
            if pts is None:
                return None
        return align_face(img, pts, self.size)
