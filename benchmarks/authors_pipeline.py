"""The authors' input pipeline, shared by the benchmarks: PIL decode at every access, per-sample transforms."""
from __future__ import annotations

from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms as T

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


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
