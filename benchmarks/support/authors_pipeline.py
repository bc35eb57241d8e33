"""The authors' input pipelines, shared by the benchmarks: decode at every access, per-sample transforms.

``PILFolder`` is the generic one (PIL decode, Resize, RandomHorizontalFlip, ToTensor, Normalize).
``AuthorsTrainSet(paths, targets, paper)`` is each paper's own train-time path on RAF-DB, as its code does
it per item (written here from reading the authors' repositories, nothing copied):

- ``fermam`` (jxcsglr/FERMam, train.py + data_preprocessing/dataset_raf.py): cv2.imread (BGR kept),
  basic_aug (p 0.5: cv2 flip or Gaussian noise of variance 30, 50/50), ToPILImage, RandomHorizontalFlip,
  Resize((224, 224)), ToTensor, Normalize(ImageNet), RandomErasing(scale=(0.02, 0.1)).
- ``mmfrm`` (hutianhan/MMFRM, data.py): cv2.imread, BGR → RGB, basic_aug, ToPILImage, Resize((112, 112)),
  ToTensor, Normalize, RandomErasing(scale=(0.02, 0.25)).
- ``emonet`` (xiayu-cell/EMO-Net, train.py + dataset.py): PIL .convert("RGB"), RandomResizedCrop(224),
  RandomHorizontalFlip, ToTensor, Normalize.
- ``grefel`` (no official code; ferlib's card, [README] values): PIL RGB, Resize(256), RandomCrop(224),
  RandomRotation(30), RandomAffine(0, shear=15), RandomPerspective(0.3), ColorJitter(0.4, 0.4, 0.4),
  RandomHorizontalFlip, ToTensor, Normalize.
- ``mfer`` (XuJ1E/MFER train.py, per its card: ImageFolder, train transform = val transform): PIL RGB,
  Resize(224), ToTensor, Normalize.
"""
from __future__ import annotations

import random

import numpy as np
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms as T

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
PAPERS = ("fermam", "mmfrm", "emonet", "grefel", "mfer")


class PILFolder(Dataset):
    """The authors' loader: open the JPEG at every access; Resize, random flip, ToTensor, Normalize per sample."""

    def __init__(self, paths, targets, size: int):
        self.paths, self.targets = list(paths), [int(t) for t in targets]
        self.tf = T.Compose([T.Resize((size, size)), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(MEAN, STD)])

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        with Image.open(self.paths[i]) as im:
            img = im.convert("RGB")
        return self.tf(img), self.targets[i]


def gaussian_noise(img: np.ndarray, var: float = 30.0) -> np.ndarray:
    """basic_aug's noise: N(0, var) added in float64, clipped, cast to uint8 (truncating)."""
    return np.clip(img + np.random.normal(0.0, var ** 0.5, img.shape), 0, 255).astype(np.uint8)


def basic_aug(img: np.ndarray) -> np.ndarray:
    """FERMam / MMFRM dataset augmentation on the decoded HxWx3 array: p 0.5, a flip or noise (50/50)."""
    import cv2

    if random.uniform(0, 1) > 0.5:
        return cv2.flip(img, 1) if random.randint(0, 1) == 0 else gaussian_noise(img)
    return img


def train_transform(paper: str):
    """The per-sample torchvision (v1) train transform of ``paper`` (after decoding and basic_aug)."""
    norm = [T.ToTensor(), T.Normalize(MEAN, STD)]
    if paper == "fermam":
        return T.Compose([T.ToPILImage(), T.RandomHorizontalFlip(), T.Resize((224, 224)), *norm,
                          T.RandomErasing(scale=(0.02, 0.1))])
    if paper == "mmfrm":
        return T.Compose([T.ToPILImage(), T.Resize((112, 112)), *norm, T.RandomErasing(scale=(0.02, 0.25))])
    if paper == "emonet":
        return T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), *norm])
    if paper == "grefel":
        return T.Compose([T.Resize(256), T.RandomCrop(224), T.RandomRotation(30), T.RandomAffine(0, shear=15),
                          T.RandomPerspective(0.3), T.ColorJitter(0.4, 0.4, 0.4), T.RandomHorizontalFlip(), *norm])
    if paper == "mfer":
        return T.Compose([T.Resize(224), *norm])
    raise ValueError(f"unknown paper {paper!r}; one of {PAPERS}")


class AuthorsTrainSet(Dataset):
    """One paper's train items as its code makes them: decode at every access, then its transforms."""

    def __init__(self, paths, targets, paper: str):
        self.paths, self.targets, self.paper = [str(p) for p in paths], [int(t) for t in targets], paper
        self.tf = train_transform(paper)

    def __len__(self):
        return len(self.paths)

    def decode(self, path: str):
        if self.paper in ("fermam", "mmfrm"):
            import cv2

            img = cv2.imread(path)  # BGR
            if self.paper == "mmfrm":
                img = img[:, :, ::-1]
            return basic_aug(img).copy()
        with Image.open(path) as im:
            return im.convert("RGB")

    def __getitem__(self, i):
        return self.tf(self.decode(self.paths[i])), self.targets[i]
