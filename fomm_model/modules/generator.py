"""Occlusion-aware generator: encode the source, warp its features by the dense motion, mask occlusions, decode."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .dense_motion import DenseMotionNetwork
from .mouth_interior import mouth_interior
from .util import DownBlock2d, ResBlock2d, SameBlock2d, UpBlock2d, grid_sample_fp32, keypoint_indices


class OcclusionAwareGenerator(nn.Module):
    """Generator of the First-Order Motion Model.

    ``forward`` reproduces the original call. For animation the work is split so the per-avatar part is
    done once: :meth:`prepare_source` (encoder features + dense-motion source inputs) and
    :meth:`forward_prepared` (dense motion, warp, decoder for one driving pose).

    ``mouth_keypoints`` (not in the original; None there) names four keypoints that track the inner upper lip,
    inner lower lip, right and left inner mouth corner (trained onto them by ``loss_weights.landmarks``). The
    occlusion map is then zeroed over the mouth interior those keypoints open beyond the source's
    (:func:`.mouth_interior.mouth_interior`), so the decoder paints an interior the source never shows instead of
    stretching closed lips: a learned map never marked it (assets/models/MODEL_CARD.md).
    """

    def __init__(self, num_channels, num_kp, block_expansion, max_features, num_down_blocks,
                 num_bottleneck_blocks, estimate_occlusion_map=False, dense_motion_params=None,
                 estimate_jacobian=False, align_corners=True, mouth_keypoints=None, **kwargs):
        super().__init__()
        if mouth_keypoints is not None:
            mouth_keypoints = keypoint_indices(mouth_keypoints, 4, num_kp, 'generator_params.mouth_keypoints',
                                               'point (upper lip, lower lip, right corner, left corner)')
            if not estimate_occlusion_map or dense_motion_params is None:
                raise ValueError("generator_params.mouth_keypoints needs estimate_occlusion_map: True and "
                                 "dense_motion_params: it acts on the occlusion map")
        self.mouth_keypoints = mouth_keypoints
        if dense_motion_params is not None:
            self.dense_motion_network = DenseMotionNetwork(num_kp=num_kp, num_channels=num_channels,
                                                           estimate_occlusion_map=estimate_occlusion_map,
                                                           align_corners=align_corners, **dense_motion_params)
        else:
            self.dense_motion_network = None
        self.first = SameBlock2d(num_channels, block_expansion, kernel_size=(7, 7), padding=(3, 3))
        self.down_blocks = nn.ModuleList(
            DownBlock2d(min(max_features, block_expansion * (2 ** i)),
                        min(max_features, block_expansion * (2 ** (i + 1))), kernel_size=(3, 3), padding=(1, 1))
            for i in range(num_down_blocks))
        self.up_blocks = nn.ModuleList(
            UpBlock2d(min(max_features, block_expansion * (2 ** (num_down_blocks - i))),
                      min(max_features, block_expansion * (2 ** (num_down_blocks - i - 1))),
                      kernel_size=(3, 3), padding=(1, 1))
            for i in range(num_down_blocks))
        self.bottleneck = nn.Sequential()
        in_features = min(max_features, block_expansion * (2 ** num_down_blocks))
        for i in range(num_bottleneck_blocks):
            self.bottleneck.add_module('r' + str(i), ResBlock2d(in_features, kernel_size=(3, 3), padding=(1, 1)))
        self.final = nn.Conv2d(block_expansion, num_channels, kernel_size=(7, 7), padding=(3, 3))
        self.estimate_occlusion_map = estimate_occlusion_map
        self.num_channels = num_channels
        self.align_corners = align_corners

    def deform_input(self, inp: torch.Tensor, deformation: torch.Tensor) -> torch.Tensor:
        """Warp ``inp`` by a (B, h, w, 2) grid, bilinearly resized to ``inp``'s size when they differ."""
        _, h_old, w_old, _ = deformation.shape
        _, _, h, w = inp.shape
        if h_old != h or w_old != w:
            deformation = F.interpolate(deformation.permute(0, 3, 1, 2), size=(h, w), mode='bilinear')
            deformation = deformation.permute(0, 2, 3, 1)
        return grid_sample_fp32(inp, deformation, self.align_corners)

    def encode(self, source_image: torch.Tensor) -> torch.Tensor:
        out = self.first(source_image)
        for block in self.down_blocks:
            out = block(out)
        return out

    def decode(self, features: torch.Tensor) -> torch.Tensor:
        out = self.bottleneck(features)
        for block in self.up_blocks:
            out = block(out)
        return torch.sigmoid(self.final(out))

    def prepare_source(self, source_image: torch.Tensor, kp_source: dict) -> dict:
        """Per-avatar work: encoder features and the dense-motion network's source inputs."""
        prepared = {'image': source_image, 'features': self.encode(source_image), 'kp': kp_source}
        if self.dense_motion_network is not None:
            prepared['dense_motion'] = self.dense_motion_network.prepare_source(source_image, kp_source)
        return prepared

    def forward_prepared(self, prepared: dict, kp_driving: dict, with_visuals: bool = True) -> dict:
        """Per-frame work. ``with_visuals=False`` skips the full-resolution ``deformed`` image (display only)."""
        out = prepared['features']
        output_dict = {}
        if self.dense_motion_network is not None:
            dense_motion = self.dense_motion_network.forward_prepared(prepared['dense_motion'], kp_driving)
            output_dict['mask'] = dense_motion['mask']
            output_dict['sparse_deformed'] = dense_motion['sparse_deformed']
            output_dict['deformation'] = dense_motion['deformation']
            occlusion_map = dense_motion.get('occlusion_map')
            if occlusion_map is not None and self.mouth_keypoints is not None:
                revealed, _ = mouth_interior(prepared['kp']['value'][:, self.mouth_keypoints],
                                             kp_driving['value'][:, self.mouth_keypoints], occlusion_map.shape[2:])
                occlusion_map = occlusion_map * (1 - revealed)
            if occlusion_map is not None:
                output_dict['occlusion_map'] = occlusion_map
            if 'occlusion_logits' in dense_motion:
                output_dict['occlusion_logits'] = dense_motion['occlusion_logits']
            deformation = dense_motion['deformation']
            out = self.deform_input(out, deformation)
            if occlusion_map is not None:
                if out.shape[2:] != occlusion_map.shape[2:]:
                    occlusion_map = F.interpolate(occlusion_map, size=out.shape[2:], mode='bilinear')
                out = out * occlusion_map.to(out.dtype)
            if with_visuals:
                output_dict['deformed'] = self.deform_input(prepared['image'], deformation)
        output_dict['prediction'] = self.decode(out)
        return output_dict

    def forward(self, source_image: torch.Tensor, kp_driving: dict, kp_source: dict) -> dict:
        return self.forward_prepared(self.prepare_source(source_image, kp_source), kp_driving)
