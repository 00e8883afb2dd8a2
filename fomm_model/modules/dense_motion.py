"""Dense motion network: sparse first-order motions around keypoints -> dense flow and occlusion map."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .util import AntiAliasInterpolation2d, Hourglass, grid_sample_fp32, inverse_2x2, kp2gaussian, make_coordinate_grid


class DenseMotionNetwork(nn.Module):
    """Predicts a dense deformation from the source/driving keypoints and the (downscaled) source image.

    The work that depends only on the source (downscaling, source heatmaps) is split out in
    :meth:`prepare_source`, so an animator can do it once per avatar. Motion maths is done in float32;
    convolutions run in the module's dtype.
    """

    def __init__(self, block_expansion, num_blocks, max_features, num_kp, num_channels,
                 estimate_occlusion_map=False, scale_factor=1, kp_variance=0.01, align_corners=True, **kwargs):
        super().__init__()
        self.hourglass = Hourglass(block_expansion=block_expansion, in_features=(num_kp + 1) * (num_channels + 1),
                                   max_features=max_features, num_blocks=num_blocks)
        self.mask = nn.Conv2d(self.hourglass.out_filters, num_kp + 1, kernel_size=(7, 7), padding=(3, 3))
        if estimate_occlusion_map:
            self.occlusion = nn.Conv2d(self.hourglass.out_filters, 1, kernel_size=(7, 7), padding=(3, 3))
        else:
            self.occlusion = None
        self.num_kp = num_kp
        self.scale_factor = scale_factor
        self.kp_variance = kp_variance
        self.align_corners = align_corners
        if self.scale_factor != 1:
            self.down = AntiAliasInterpolation2d(num_channels, self.scale_factor)

    def prepare_source(self, source_image: torch.Tensor, kp_source: dict) -> dict:
        """Everything that depends only on the source image and its keypoints."""
        if self.scale_factor != 1:
            source_image = self.down(source_image)
        return self.prepare_downscaled(source_image, kp_source)

    def prepare_downscaled(self, source_down: torch.Tensor, kp_source: dict) -> dict:
        """As :meth:`prepare_source`, from the source already at this network's scale."""
        h, w = source_down.shape[2:]
        return {'image': source_down, 'kp': kp_source,
                'gaussian': kp2gaussian(kp_source, (h, w), self.kp_variance).float(),
                'identity_grid': make_coordinate_grid((h, w), torch.float32, source_down.device)}

    def create_sparse_motions(self, prepared: dict, kp_driving: dict) -> torch.Tensor:
        """T_k(z) = kp_s + J_s J_d^-1 (z - kp_d) for each keypoint, identity for the background: (B, K+1, h, w, 2)."""
        kp_source = prepared['kp']
        grid = prepared['identity_grid']
        bs = kp_driving['value'].shape[0]
        h, w = grid.shape[:2]
        coords = grid[None, None] - kp_driving['value'].float()[:, :, None, None, :]
        if 'jacobian' in kp_driving:
            jacobian = torch.matmul(kp_source['jacobian'].float(), inverse_2x2(kp_driving['jacobian'].float()))
            coords = torch.einsum('bkij,bkhwj->bkhwi', jacobian, coords)
        driving_to_source = coords + kp_source['value'].float()[:, :, None, None, :]
        identity = grid[None, None].expand(bs, 1, h, w, 2)
        return torch.cat([identity, driving_to_source], dim=1)

    def create_deformed_source_image(self, source_image: torch.Tensor, sparse_motions: torch.Tensor) -> torch.Tensor:
        bs, c, h, w = source_image.shape
        k1 = sparse_motions.shape[1]
        source_repeat = source_image.unsqueeze(1).expand(bs, k1, c, h, w).reshape(bs * k1, c, h, w)
        grid = sparse_motions.reshape(bs * k1, h, w, 2)
        sparse_deformed = grid_sample_fp32(source_repeat, grid, self.align_corners)
        return sparse_deformed.view(bs, k1, c, h, w)

    def forward_prepared(self, prepared: dict, kp_driving: dict) -> dict:
        source_image = prepared['image']
        bs, _, h, w = source_image.shape
        gaussian_driving = kp2gaussian({'value': kp_driving['value'].float()}, (h, w), self.kp_variance)
        heatmap = gaussian_driving - prepared['gaussian']
        heatmap = torch.cat([torch.zeros_like(heatmap[:, :1]), heatmap], dim=1).unsqueeze(2)
        sparse_motion = self.create_sparse_motions(prepared, kp_driving)
        deformed_source = self.create_deformed_source_image(source_image, sparse_motion)
        out = {'sparse_deformed': deformed_source}
        hourglass_input = torch.cat([heatmap.to(source_image.dtype), deformed_source], dim=2).reshape(bs, -1, h, w)
        prediction = self.hourglass(hourglass_input)
        mask = F.softmax(self.mask(prediction).float(), dim=1)
        out['mask'] = mask
        out['deformation'] = (sparse_motion * mask.unsqueeze(-1)).sum(dim=1)
        if self.occlusion is not None:
            # float32 like the mask: a bfloat16 sigmoid rounds anything above ~0.998 to exactly 1, where no gradient
            # flows back (the maps of the models trained here under bf16 autocast stuck at 1). Training keeps the
            # logits for losses on the map (fomm_model.training.full_model.mouth_occlusion_loss).
            logits = self.occlusion(prediction).float()
            out['occlusion_map'] = torch.sigmoid(logits)
            if self.training:
                out['occlusion_logits'] = logits
        return out

    def forward(self, source_image: torch.Tensor, kp_driving: dict, kp_source: dict) -> dict:
        return self.forward_prepared(self.prepare_source(source_image, kp_source), kp_driving)
