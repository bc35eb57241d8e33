"""Face alignment: a 5-point similarity transform onto the ArcFace template (112×112, or scaled to 100×100).

Points, in image order: left eye centre, right eye centre (as seen in the image), nose tip, left and right
mouth corners. From 68 iBUG landmarks (AffectNet's CSV, the synthetic generator) they are the means of
points 36–41 and 42–47, point 30, points 48 and 54. Without landmarks, MTCNN (facenet-pytorch, whose wheel
ships the weights: ``pip install --no-deps facenet-pytorch``) finds them; it is an optional dependency.

The 100×100 template is the 112×112 ArcFace template scaled by 100/112 (RAF-DB's own aligned crops come
from its authors' tool, which is not public).

Pixels the warp takes from outside the source image are filled with a constant (black, as InsightFace's
``norm_crop`` and face.evoLVe do) or the replicated edge — never mirrored (``BORDER_REFLECT_101`` paints
mirrored eyes and mouths around an already-cropped face). Input that is already a face crop is better
used as it is: :class:`FaceAligner` and :func:`warn_if_already_cropped` warn when most detected faces
fill nearly the whole image.
"""
from __future__ import annotations

import dataclasses
import warnings

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


#: How the warp fills pixels that come from outside the source image.
BORDERS = ("constant", "replicate")

#: A detected face whose box covers at least this share of the image means the input is already a face crop.
CROPPED_COVERAGE = 0.7


class AlreadyCroppedWarning(UserWarning):
    """Most detected faces fill nearly the whole image: the input is already cropped; aligning it zooms
    out and fills a border around the face."""


def align_face(img: np.ndarray, points5, size: int = 112, border: str = "constant", fill: int = 0) -> np.ndarray:
    """Warp ``img`` uint8 [H,W,3] so ``points5`` [5,2] land on the template; returns uint8 [size,size,3].

    ``border``: ``"constant"`` fills pixels from outside ``img`` with ``fill`` (0..255, every channel);
    ``"replicate"`` repeats the edge pixels. Never a mirror of the face."""
    import cv2

    if border not in BORDERS:
        raise ValueError(f"border must be one of {BORDERS}, got {border!r}")
    M = similarity_transform(points5, template(size))
    mode = cv2.BORDER_CONSTANT if border == "constant" else cv2.BORDER_REPLICATE
    return cv2.warpAffine(img, M, (size, size), flags=cv2.INTER_LINEAR, borderMode=mode,
                          borderValue=(fill, fill, fill))


def box_coverage(box, shape) -> float:
    """Share of an image ``shape`` (H, W, …) covered by ``box`` (x1, y1, x2, y2), clipped to the image."""
    h, w = shape[:2]
    x1, y1, x2, y2 = (float(v) for v in box)
    cw = max(0.0, min(x2, w) - max(x1, 0.0))
    ch = max(0.0, min(y2, h) - max(y1, 0.0))
    return cw * ch / float(h * w)


@dataclasses.dataclass
class Face:
    """One detected face: ``box`` float [4] = x1, y1, x2, y2 in pixels, ``prob`` the detector's score,
    ``points`` float64 [5,2] (eye centres, nose tip, mouth corners, in image order)."""

    box: np.ndarray
    prob: float
    points: np.ndarray


class MTCNNDetector:
    """facenet-pytorch's MTCNN: ``detect(img)`` → every face; ``detector(img)`` → the 5 points of the most
    confident face, or None when no face scores ``min_prob``."""

    def __init__(self, device: str = "cpu", min_prob: float = 0.9):
        try:
            from facenet_pytorch import MTCNN
        except ImportError as e:
            raise ImportError(INSTALL_HINT) from e
        self.mtcnn = MTCNN(keep_all=True, device=device)
        self.min_prob = min_prob
        #: box coverage (:func:`box_coverage`) of the face last returned by ``__call__``
        self.last_coverage: float | None = None

    def detect(self, img: np.ndarray) -> list[Face]:
        """Faces scoring at least ``min_prob`` in ``img`` uint8 [H,W,3] (RGB), most confident first."""
        from PIL import Image

        boxes, probs, points = self.mtcnn.detect(Image.fromarray(np.ascontiguousarray(img)), landmarks=True)
        if boxes is None or points is None or len(boxes) == 0:
            return []
        # numpy 2: the arrays may come back with dtype=object; convert element-wise
        probs = [float(p) if p is not None else 0.0 for p in np.asarray(probs).ravel()]
        faces = [Face(np.asarray(b, np.float64).reshape(4), pr,
                      np.stack([np.asarray(q, np.float64) for q in np.asarray(pts)]).reshape(5, 2))
                 for b, pr, pts in zip(boxes, probs, points) if pr >= self.min_prob]
        return sorted(faces, key=lambda f: -f.prob)

    def __call__(self, img: np.ndarray):
        faces = self.detect(img)
        if not faces:
            self.last_coverage = None
            return None
        self.last_coverage = box_coverage(faces[0].box, img.shape)
        return faces[0].points


def _cropped_message(share: float, n: int) -> str:
    return (f"{share:.0%} of {n} detected faces cover at least {CROPPED_COVERAGE:.0%} of their image: the images "
            "look like face crops already. Aligning them zooms out and fills a border around the face; use them "
            "as they are (align=False, no --align).")


def warn_if_already_cropped(dataset, n: int = 16, detector=None) -> float | None:
    """Detect faces on ``n`` images spread over ``dataset`` (items ``load(i)`` → uint8 [3,H,W] or ``load_full``);
    warn (:class:`AlreadyCroppedWarning`) when more than half of the found faces cover nearly the whole
    image. Returns that share, or None when no face was found."""
    detector = detector or MTCNNDetector()
    idx = np.unique(np.linspace(0, len(dataset) - 1, num=min(n, len(dataset))).astype(int)) if len(dataset) else []
    cover = []
    for i in idx:
        img = dataset.load_full(i) if hasattr(dataset, "load_full") else dataset.load(i).permute(1, 2, 0).numpy()
        faces = detector.detect(np.ascontiguousarray(img))
        if faces:
            cover.append(box_coverage(faces[0].box, img.shape))
    if not cover:
        return None
    share = float(np.mean(np.asarray(cover) >= CROPPED_COVERAGE))
    if share > 0.5:
        warnings.warn(_cropped_message(share, len(cover)), AlreadyCroppedWarning, stacklevel=2)
    return share


class FaceAligner:
    """``aligner(img, landmarks68=None)`` → aligned uint8 [size,size,3], or None when no face is found.

    Uses the given landmarks when there are any, else the detector (MTCNN by default, created on first use).
    ``border`` / ``fill``: see :func:`align_face`. After ``check_after`` detections, warns once
    (:class:`AlreadyCroppedWarning`) when more than half of the faces covered nearly their whole image.
    """

    def __init__(self, size: int = 112, detector=None, border: str = "constant", fill: int = 0,
                 check_after: int = 16):
        self.size = size
        self.detector = detector
        self.border, self.fill = border, fill
        self.check_after = check_after
        self.coverages: list[float] = []
        self._warned = False

    def _track(self) -> None:
        cov = getattr(self.detector, "last_coverage", None)
        if cov is None or self._warned:
            return
        self.coverages.append(cov)
        if len(self.coverages) >= self.check_after:
            share = float(np.mean(np.asarray(self.coverages) >= CROPPED_COVERAGE))
            if share > 0.5:
                warnings.warn(_cropped_message(share, len(self.coverages)), AlreadyCroppedWarning, stacklevel=3)
                self._warned = True

    def __call__(self, img: np.ndarray, landmarks68=None):
        if landmarks68 is not None:
            pts = five_points(landmarks68)
        else:
            if self.detector is None:
                self.detector = MTCNNDetector()
            pts = self.detector(img)
            if pts is None:
                return None
            self._track()
        return align_face(img, pts, self.size, self.border, self.fill)
