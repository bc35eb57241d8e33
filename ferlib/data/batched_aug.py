"""torchvision's random augmentations drawn per image for a whole batch, with no host synchronisation.

Each op takes a batch ``[B,C,H,W]`` (uint8 for the pixel ops, float for erasing, which runs after
normalisation), draws one set of parameters per image from the same distribution as the torchvision v2
transform it replaces (``make_params`` of that transform; torchvision 0.2x), and applies them with tensor
operations only: no ``.item()``, no boolean-mask indexing, no Python loop over images, no CPU→device copy.
A ``sample(B, H, W, device)`` method returns the drawn parameters (for the distribution tests and parity
checks) and ``apply(x, params)`` applies given parameters, so a fixed draw can be compared with torchvision.

Geometric ops (``BatchedRotation``, ``BatchedAffine``, ``BatchedPerspective``) build torchvision's sampling
grid (``_affine_grid`` / ``_perspective_grid``: pixel centres, ``align_corners=False``) with one matrix per
image and run one ``grid_sample`` for the batch, with torchvision's fill handling (fill 0: nearest keeps
grid_sample's zeros, bilinear multiplies by the resampled coverage mask) and its rounding back to uint8.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torchvision.transforms import v2

#: tries per image before the fallback, as in torchvision's RandomErasing / RandomResizedCrop
TRIES = 10


def first_fitting_box(B: int, H: int, W: int, scale, ratio, fits, device, tries: int = TRIES):
    """``(h, w, found)`` [B] int64, int64, bool: per image the first of ``tries`` candidate boxes that ``fits``.

    Candidate k: area ``H·W·U(scale)``, aspect ``exp(U(log ratio))``, ``a = round(√(area·aspect))`` and
    ``b = round(√(area/aspect))`` (torchvision's draw; RandomErasing calls them h, w and RandomResizedCrop
    w, h). ``fits(a, b)`` says which candidates are usable; where none is, ``found`` is False.
    """
    area = float(H * W)
    s = torch.empty(B, tries, device=device, dtype=torch.float64).uniform_(float(scale[0]), float(scale[1]))
    lr = torch.empty(B, tries, device=device, dtype=torch.float64).uniform_(math.log(ratio[0]), math.log(ratio[1]))
    target, aspect = area * s, lr.exp()
    a = torch.round(torch.sqrt(target * aspect)).long()
    b = torch.round(torch.sqrt(target / aspect)).long()
    ok = fits(a, b)
    first = ok.to(torch.int32).argmax(1, keepdim=True)  # index of the first True (0 when none)
    return a.gather(1, first)[:, 0], b.gather(1, first)[:, 0], ok.any(1)


def uniform_int(high: torch.Tensor) -> torch.Tensor:
    """One integer per element, uniform in ``[0, high)`` (``high`` ≥ 1, int64 tensor)."""
    u = torch.rand(high.shape, device=high.device, dtype=torch.float64)
    return torch.minimum((u * high).long(), high - 1)


def box_mask(top, left, h, w, H: int, W: int, keep=None) -> torch.Tensor:
    """bool [B,1,H,W]: True inside each image's box ``[top, top+h) × [left, left+w)`` (nowhere in the
    images where ``keep`` [B] is False)."""
    rows = torch.arange(H, device=top.device)
    cols = torch.arange(W, device=top.device)
    r = (rows >= top[:, None]) & (rows < (top + h)[:, None])
    if keep is not None:
        r &= keep[:, None]
    c = (cols >= left[:, None]) & (cols < (left + w)[:, None])
    return (r[:, :, None] & c[:, None, :])[:, None]


class BatchedRandomErasing(torch.nn.Module):
    """torchvision ``RandomErasing`` (Zhong et al. 2020) per image on a float batch [B,C,H,W].

    Arguments and their checks are torchvision's (``v2.RandomErasing`` validates them). Per image: erase
    with probability ``p``; the box is the first of 10 candidates (area fraction ``U(scale)``, aspect
    ``exp(U(log ratio))``, h = round(√(area·aspect)), w = round(√(area/aspect))) with h < H and w < W,
    placed uniformly; no box fits in 10 tries → the image is left as it is, as torchvision does.
    ``value`` is a number, one per channel, or ``"random"`` (standard normal noise); ``inplace`` erases
    in the given tensor (as torchvision's ``inplace``).
    """

    def __init__(self, p: float = 0.5, scale=(0.02, 0.33), ratio=(0.3, 3.3), value=0.0, inplace: bool = False):
        super().__init__()
        ref = v2.RandomErasing(p=p, scale=tuple(scale), ratio=tuple(ratio), value=value)
        self.p, self.scale, self.ratio = float(ref.p), tuple(ref.scale), tuple(ref.ratio)
        self.value = None if ref.value is None else [float(v) for v in ref.value]  # None = "random"
        self.inplace = inplace
        if self.value is not None:
            self.register_buffer("fill", torch.tensor(self.value, dtype=torch.float32).view(1, -1, 1, 1),
                                 persistent=False)

    def sample(self, B: int, H: int, W: int, device=None) -> dict:
        """``{"erase": bool [B], "top", "left", "h", "w": int64 [B]}``."""
        h, w, found = first_fitting_box(B, H, W, self.scale, self.ratio, lambda a, b: (a < H) & (b < W), device)
        erase = (torch.rand(B, device=device) < self.p) & found
        return {"erase": erase, "top": uniform_int(H - h + 1), "left": uniform_int(W - w + 1), "h": h, "w": w}

    def apply(self, x: torch.Tensor, prm: dict) -> torch.Tensor:
        B, C, H, W = x.shape
        m = box_mask(prm["top"], prm["left"], prm["h"], prm["w"], H, W, keep=prm["erase"])
        if self.value is None:
            return torch.where(m, torch.randn(x.shape, device=x.device, dtype=x.dtype), x)
        if len(self.value) == 1:  # one fill value: an in-place masked fill (no new batch-sized tensor)
            return (x if self.inplace else x.clone()).masked_fill_(m, self.value[0])
        return torch.where(m, self.fill.to(x.dtype), x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.apply(x, self.sample(x.shape[0], x.shape[-2], x.shape[-1], x.device))


class BatchedRandomResizedCrop(torch.nn.Module):
    """torchvision ``RandomResizedCrop(size, scale, ratio)`` per image on a uint8 batch → [B,C,size,size].

    The box is torchvision's (first of 10 candidates with 0 < w ≤ W and 0 < h ≤ H, else the central crop
    of the clipped aspect). When every crop is enlarged (input side ≤ ``size``, e.g. RAF-DB's 100×100 crops
    → 224) the resize is one bilinear ``grid_sample`` over the batch, sampling positions clamped to the box
    as ``resize`` clamps them to the cropped image (antialiasing does nothing when enlarging). A larger input
    (where torchvision's antialiased shrink matters) is cropped and resized per image with torchvision, which
    reads the boxes on the host (not the case of any paper card: their crops enlarge).
    """

    def __init__(self, size: int, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
        super().__init__()
        self.ref = v2.RandomResizedCrop(size, scale=tuple(scale), ratio=tuple(ratio), antialias=True)
        self.size, self.scale, self.ratio = int(size), tuple(self.ref.scale), tuple(self.ref.ratio)

    def sample(self, B: int, H: int, W: int, device=None) -> dict:
        """``{"top", "left", "h", "w": int64 [B]}``."""
        w, h, found = first_fitting_box(B, H, W, self.scale, self.ratio,
                                        lambda a, b: (a > 0) & (a <= W) & (b > 0) & (b <= H), device)
        in_ratio, lo, hi = W / H, min(self.ratio), max(self.ratio)
        fh, fw = (int(round(W / lo)), W) if in_ratio < lo else (H, int(round(H * hi))) if in_ratio > hi else (H, W)
        h, w = torch.where(found, h, fh), torch.where(found, w, fw)
        top = torch.where(found, uniform_int(H - h + 1), (H - h) // 2)
        left = torch.where(found, uniform_int(W - w + 1), (W - w) // 2)
        return {"top": top, "left": left, "h": h, "w": w}

    def apply(self, x: torch.Tensor, prm: dict) -> torch.Tensor:
        B, C, H, W = x.shape
        S = self.size
        if H > S or W > S:
            return torch.stack([v2.functional.resized_crop(x[b], int(prm["top"][b]), int(prm["left"][b]),
                                                           int(prm["h"][b]), int(prm["w"][b]), [S, S], antialias=True)
                                for b in range(B)])
        ar = torch.arange(S, device=x.device, dtype=torch.float32) + 0.5

        def axis(start, length, n):  # source pixel coordinate of each output pixel, clamped to the box
            src = (ar[None] * (length[:, None].float() / S) - 0.5).clamp(min=0)
            src = torch.minimum(src, (length[:, None] - 1).float()) + start[:, None].float()
            return (2 * src + 1) / n - 1  # to grid_sample's normalised coordinates (align_corners=False)

        gx, gy = axis(prm["left"], prm["w"], W), axis(prm["top"], prm["h"], H)
        grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), dim=-1)
        out = F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
        return out.round_().clamp_(0, 255).to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.apply(x, self.sample(x.shape[0], x.shape[-2], x.shape[-1], x.device))


# ------------------------------------------------------------------------------------------ geometry

def inverse_affine(angle, translate_x, translate_y, scale, shear_x, shear_y) -> torch.Tensor:
    """[B,2,3] float64: torchvision's ``_get_inverse_affine_matrix`` (centre 0) with one row per image.

    Angles in degrees, tensors [B] (float64)."""
    rot, sx, sy = torch.deg2rad(angle), torch.deg2rad(shear_x), torch.deg2rad(shear_y)
    a = torch.cos(rot - sy) / torch.cos(sy)
    b = -(a * torch.tan(sx) + torch.sin(rot))
    c = torch.sin(rot - sy) / torch.cos(sy)
    d = torch.cos(rot) - c * torch.tan(sx)
    m0, m1, m3, m4 = d / scale, -b / scale, -c / scale, a / scale
    m2 = -m0 * translate_x - m1 * translate_y
    m5 = -m3 * translate_x - m4 * translate_y
    return torch.stack([m0, m1, m2, m3, m4, m5], dim=-1).view(-1, 2, 3)


def plane(coef: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """[B,H,W]: ``c0·x + c1·y + c2`` per image for coefficients [B,3] over pixel coordinates xs [W], ys [H]
    (broadcast sums: no batch-sized copy of the pixel grid)."""
    c0, c1, c2 = (c.view(-1, 1, 1) for c in coef.unbind(1))
    return c0 * xs.view(1, 1, -1) + (c1 * ys.view(1, -1, 1) + c2)


def affine_grid(theta: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """[B,H,W,2] grid of torchvision's ``_affine_grid`` (same-size output) for inverse matrices [B,2,3]:
    centred pixel coordinates mapped by theta, divided by half the size."""
    dev = theta.device
    xs = torch.arange(W, device=dev, dtype=torch.float32) - (W - 1) * 0.5
    ys = torch.arange(H, device=dev, dtype=torch.float32) - (H - 1) * 0.5
    t = theta.float()
    return torch.stack([plane(t[:, 0] / (0.5 * W), xs, ys), plane(t[:, 1] / (0.5 * H), xs, ys)], dim=-1)


def grid_transform(x: torch.Tensor, grid: torch.Tensor, mode: str) -> torch.Tensor:
    """torchvision's ``_apply_grid_transform`` with fill 0, one grid per image; uint8 in, uint8 out."""
    out = F.grid_sample(x.float(), grid, mode=mode, padding_mode="zeros", align_corners=False)
    if mode == "bilinear":  # torchvision blends the border with the fill through a resampled ones-mask
        ones = torch.ones((1, 1) + x.shape[-2:], device=x.device).expand(x.shape[0], 1, -1, -1)
        out = out.mul_(F.grid_sample(ones, grid, mode=mode, padding_mode="zeros", align_corners=False))
    return out.round_().to(x.dtype) if not x.is_floating_point() else out


class BatchedRotation(torch.nn.Module):
    """torchvision ``RandomRotation(degrees)`` per image (nearest, no expand, centre, fill 0)."""

    def __init__(self, degrees):
        super().__init__()
        self.degrees = list(v2.RandomRotation(degrees).degrees)

    def sample(self, B: int, H: int, W: int, device=None) -> dict:
        """``{"angle": float64 [B]}`` in degrees, U(degrees)."""
        return {"angle": torch.empty(B, device=device, dtype=torch.float64).uniform_(*self.degrees)}

    def apply(self, x: torch.Tensor, prm: dict) -> torch.Tensor:
        z = torch.zeros_like(prm["angle"])
        # torchvision rotates by -angle through the affine matrix (its rotate / affine sign convention)
        theta = inverse_affine(-prm["angle"], z, z, z + 1, z, z)
        return grid_transform(x, affine_grid(theta, x.shape[-2], x.shape[-1]), "nearest")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.apply(x, self.sample(x.shape[0], x.shape[-2], x.shape[-1], x.device))


class BatchedAffine(torch.nn.Module):
    """torchvision ``RandomAffine(degrees, translate, scale, shear)`` per image (nearest, centre, fill 0)."""

    def __init__(self, degrees=0, translate=None, scale=None, shear=None):
        super().__init__()
        ref = v2.RandomAffine(degrees=degrees, translate=translate, scale=scale, shear=shear)
        self.degrees, self.translate, self.scale = list(ref.degrees), ref.translate, ref.scale
        self.shear = None if ref.shear is None else list(ref.shear)

    def sample(self, B: int, H: int, W: int, device=None) -> dict:
        """``{"angle", "tx", "ty", "scale", "shear_x", "shear_y": float64 [B]}`` (tx, ty whole pixels)."""
        def u(lo, hi):
            return torch.empty(B, device=device, dtype=torch.float64).uniform_(lo, hi)

        zero = torch.zeros(B, device=device, dtype=torch.float64)
        prm = {"angle": u(*self.degrees), "tx": zero, "ty": zero, "scale": zero + 1, "shear_x": zero, "shear_y": zero}
        if self.translate is not None:
            dx, dy = float(self.translate[0] * W), float(self.translate[1] * H)
            prm["tx"], prm["ty"] = torch.round(u(-dx, dx)), torch.round(u(-dy, dy))
        if self.scale is not None:
            prm["scale"] = u(*self.scale)
        if self.shear is not None:
            prm["shear_x"] = u(self.shear[0], self.shear[1])
            if len(self.shear) == 4:
                prm["shear_y"] = u(self.shear[2], self.shear[3])
        return prm

    def apply(self, x: torch.Tensor, prm: dict) -> torch.Tensor:
        theta = inverse_affine(prm["angle"], prm["tx"], prm["ty"], prm["scale"], prm["shear_x"], prm["shear_y"])
        return grid_transform(x, affine_grid(theta, x.shape[-2], x.shape[-1]), "nearest")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.apply(x, self.sample(x.shape[0], x.shape[-2], x.shape[-1], x.device))


class BatchedPerspective(torch.nn.Module):
    """torchvision ``RandomPerspective(distortion_scale, p)`` per image (bilinear, fill 0).

    Corners move inwards by up to ``int(distortion_scale · side/2) + 1`` pixels (torchvision's integer
    draws); the 8 homography coefficients solve torchvision's least-squares system (float64) per image."""

    def __init__(self, distortion_scale: float = 0.5, p: float = 0.5):
        super().__init__()
        ref = v2.RandomPerspective(distortion_scale=distortion_scale, p=p)
        self.distortion_scale, self.p = float(ref.distortion_scale), float(ref.p)

    def sample(self, B: int, H: int, W: int, device=None) -> dict:
        """``{"apply": bool [B], "endpoints": int64 [B,4,2]}`` (x, y of top-left, top-right, bottom-right,
        bottom-left)."""
        bh, bw = int(self.distortion_scale * (H // 2)) + 1, int(self.distortion_scale * (W // 2)) + 1

        def r(lo, hi):
            return torch.randint(lo, hi, (B,), device=device)

        ends = torch.stack([torch.stack([r(0, bw), r(0, bh)], -1), torch.stack([r(W - bw, W), r(0, bh)], -1),
                            torch.stack([r(W - bw, W), r(H - bh, H)], -1), torch.stack([r(0, bw), r(H - bh, H)], -1)], 1)
        return {"apply": torch.rand(B, device=device) < self.p, "endpoints": ends}

    @staticmethod
    def coefficients(endpoints: torch.Tensor, H: int, W: int) -> torch.Tensor:
        """[B,8] float32: torchvision's ``_get_perspective_coeffs(startpoints, endpoints)`` per image.

        torchvision solves the 8×8 system by least squares; it has one exact solution, the homography
        taking the end quadrilateral to the image corners, which is computed here in closed form (float64):
        unit square → end quad (Heckbert 1989, §2.2.3), inverted by its adjugate, then scaled to the
        corners. (torch.linalg's solvers read their status on the host.)"""
        e = endpoints.to(torch.float64)
        (x0, x1, x2, x3), (y0, y1, y2, y3) = e[..., 0].unbind(1), e[..., 1].unbind(1)
        dx1, dx2, dx3 = x1 - x2, x3 - x2, x0 - x1 + x2 - x3
        dy1, dy2, dy3 = y1 - y2, y3 - y2, y0 - y1 + y2 - y3
        den = dx1 * dy2 - dx2 * dy1
        g, h = (dx3 * dy2 - dx2 * dy3) / den, (dx1 * dy3 - dx3 * dy1) / den
        one = torch.ones_like(g)
        q = torch.stack([x1 - x0 + g * x1, x3 - x0 + h * x3, x0,
                         y1 - y0 + g * y1, y3 - y0 + h * y3, y0, g, h, one], -1).view(-1, 3, 3)
        a, b, c, d, e_, f, g, h, i = q.flatten(1).unbind(1)
        adj = torch.stack([e_ * i - f * h, c * h - b * i, b * f - c * e_,
                           f * g - d * i, a * i - c * g, c * d - a * f,
                           d * h - e_ * g, b * g - a * h, a * e_ - b * d], -1).view(-1, 3, 3)
        # end quad → unit square → image corners: rows of the adjugate scaled by (W − 1, H − 1, 1)
        m = torch.stack([adj[:, 0] * (W - 1.0), adj[:, 1] * (H - 1.0), adj[:, 2]], 1)
        m = m / m[:, 2:, 2:]
        return m.flatten(1)[:, :8].float()

    def apply(self, x: torch.Tensor, prm: dict) -> torch.Tensor:
        B, C, H, W = x.shape
        c = self.coefficients(prm["endpoints"], H, W)
        # torchvision's _perspective_grid: pixel centres (x + 0.5, y + 0.5) through the homography
        xs = torch.arange(W, device=x.device, dtype=torch.float32) + 0.5
        ys = torch.arange(H, device=x.device, dtype=torch.float32) + 0.5
        den = plane(torch.cat([c[:, 6:], torch.ones(B, 1, device=x.device)], 1), xs, ys)
        gx = plane(c[:, 0:3] / (0.5 * W), xs, ys).div_(den).sub_(1)
        gy = plane(c[:, 3:6] / (0.5 * H), xs, ys).div_(den).sub_(1)
        grid = torch.stack([gx, gy], dim=-1)
        return torch.where(prm["apply"].view(-1, 1, 1, 1), grid_transform(x, grid, "bilinear"), x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.apply(x, self.sample(x.shape[0], x.shape[-2], x.shape[-1], x.device))


# ------------------------------------------------------------------------------------------ colour

class BatchedColorJitter(torch.nn.Module):
    """torchvision ``ColorJitter(brightness, contrast, saturation, hue)`` per image on a uint8 batch.

    Per image: factors uniform in torchvision's ranges and the four adjustments in a random order (its
    ``randperm(4)``); each adjustment is torchvision's uint8 kernel (blend with black / the grey mean / the
    grey image, clamp, truncate to an integer; hue through HSV) with per-image factors. An image whose
    op at a position is another one gets factor 1 there, which leaves uint8 values unchanged exactly.
    """

    def __init__(self, brightness=0, contrast=0, saturation=0, hue=0):
        super().__init__()
        ref = v2.ColorJitter(brightness, contrast, saturation, hue)
        self.brightness, self.contrast, self.saturation, self.hue = ref.brightness, ref.contrast, ref.saturation, ref.hue

    def sample(self, B: int, H: int = 0, W: int = 0, device=None) -> dict:
        """``{"order": int64 [B,4] (0 brightness, 1 contrast, 2 saturation, 3 hue), "brightness", "contrast",
        "saturation", "hue": float32 [B] (None where the op is off)}``."""
        def u(rng):
            return None if rng is None else torch.empty(B, device=device).uniform_(rng[0], rng[1])

        return {"order": torch.rand(B, 4, device=device).argsort(1), "brightness": u(self.brightness),
                "contrast": u(self.contrast), "saturation": u(self.saturation), "hue": u(self.hue)}

    @staticmethod
    def _grey(x: torch.Tensor) -> torch.Tensor:
        r, g, b = x.unbind(1)
        return r.mul(0.2989).add_(g, alpha=0.587).add_(b, alpha=0.114).floor_().unsqueeze(1)

    def apply(self, x: torch.Tensor, prm: dict) -> torch.Tensor:
        dtype = x.dtype
        y = x.to(torch.float32, copy=True)  # adjusted in place below
        ops = [(i, prm[k]) for i, k in enumerate(("brightness", "contrast", "saturation", "hue")) if prm[k] is not None]
        for pos in range(4):
            for op, factor in ops:
                sel = prm["order"][:, pos] == op
                if op == 3:  # an image whose op here is another keeps its values exactly
                    y = torch.where(sel.view(-1, 1, 1, 1), self._hue(y, factor), y)
                    continue
                f = torch.where(sel, factor, torch.ones_like(factor)).view(-1, 1, 1, 1)
                if op == 0:
                    y = y.mul_(f)
                else:
                    other = self._grey(y)
                    if op == 1:
                        other = other.mean(dim=(1, 2, 3), keepdim=True)
                    y = y.mul_(f).addcmul_(other, 1 - f)
                y = y.clamp_(0, 255).floor_()
        return y.to(dtype)

    @staticmethod
    def _hue(y: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
        """torchvision's uint8 ``adjust_hue`` (to [0,1], HSV, shift, back, ×(256 − 1e-3), truncate)."""
        from torchvision.transforms.v2.functional._color import _hsv_to_rgb, _rgb_to_hsv

        hsv = _rgb_to_hsv(y.mul(1.0 / 255.0))
        h, s, v = hsv.unbind(1)
        h = (h + factor.view(-1, 1, 1)).remainder_(1.0)
        rgb = _hsv_to_rgb(torch.stack([h, s, v], 1))
        return rgb.mul_(256.0 - 1e-3).floor_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.apply(x, self.sample(x.shape[0], device=x.device))
