"""Where a mouth opens between two frames: the inner-mouth ellipse the driving frame shows and the source does not.

Used by training (the mouth-occlusion loss, on face-landmark anchors) and by the generator's keypoint-guided mouth
occlusion (``mouth_keypoints``, on its own lip keypoints), so both see the same region.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .util import make_coordinate_grid


def _axes(mouth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Half axes (a along the corners, b across the lips) and the unit vectors u, v of (B, 4, 2) mouth points in
    the order upper lip, lower lip, right corner, left corner (the subject's right: the image's left).

    b is the signed gap from the upper to the lower lip, clamped at 0: lips pressed past each other (a closing
    mouth moved by relative motion onto a source whose lips already touch) are shut, not open.
    """
    major = mouth[:, 2] - mouth[:, 3]
    a = (major.norm(dim=-1) / 2).clamp(min=1e-3)
    u = major / (2 * a[:, None])
    v = torch.stack([u[:, 1], -u[:, 0]], -1)  # u turned to point from the upper lip to the lower one
    b = ((mouth[:, 1] - mouth[:, 0]) * v).sum(-1).clamp(min=0) / 2
    return a, b, u, v


def mouth_interior(source: torch.Tensor, driving: torch.Tensor, size: tuple[int, int],
                   supersample: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 1, H, W) coverage of the driving mouth's interior not open in the source, and of its surroundings.

    ``source`` and ``driving`` are (B, 4, 2) points in keypoint coordinates ([-1, 1], x then y): inner upper lip,
    inner lower lip, right and left inner corner. The inner mouth is the ellipse through the corners (major axis)
    and the inner lips (minor axis). The source's is placed on the driving's centre and axes, so head motion
    between the two frames does not count as opening; what the driving's ellipse covers beyond the source's is
    mouth interior the source never shows. The surroundings are the lips and skin around it.
    """
    source, driving = source.float(), driving.float()
    a_d, b_d, u, v = _axes(driving)
    a_s, b_s, _, _ = _axes(source)
    centre = driving.mean(1)
    h, w = size[0] * supersample, size[1] * supersample
    grid = make_coordinate_grid((h, w), torch.float32, driving.device).view(1, h, w, 2) - centre.view(-1, 1, 1, 2)
    along = (grid * u.view(-1, 1, 1, 2)).sum(-1)
    across = (grid * v.view(-1, 1, 1, 2)).sum(-1)

    def inside(a, b):
        b = b.clamp(min=1e-4).view(-1, 1, 1)
        return ((along / a.view(-1, 1, 1)) ** 2 + (across / b) ** 2 <= 1).float()

    revealed = (inside(a_d, b_d) - inside(a_s, b_s)).clamp(min=0)
    # the lips and skin around: should stay warped from the source (so a map cannot just darken the whole mouth)
    around = inside(1.4 * a_d, torch.maximum(b_d, b_s) + 0.5 * a_d)
    return F.avg_pool2d(revealed[:, None], supersample), F.avg_pool2d(around[:, None], supersample)
