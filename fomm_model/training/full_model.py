"""Training losses of the original model.py: GeneratorFullModel and DiscriminatorFullModel.

They are nn.Modules that run the networks and return a dict of weighted losses, so a whole training
forward can be wrapped by DistributedDataParallel. Deliberate extensions, all absent from the original and 0
by default: ``loss_weights.l1`` adds a pixel L1 term between prediction and driving frame,
``loss_weights.landmarks`` pulls the keypoints named by ``train_params.landmark_keypoints`` onto face landmarks
(see :mod:`.landmark_targets`), ``loss_weights.mouth`` weighs the mouth (:meth:`GeneratorFullModel.mouth_loss`) and
``loss_weights.mouth_occlusion`` teaches the occlusion map where a mouth opens (:func:`mouth_occlusion_loss`) and
``loss_weights.cross_keypoints`` drives each source with another item's motion as the app does and asks the keypoint
detector to find the named keypoints where they were sent, and ``loss_weights.cross_mouth`` asks a frozen reader
(``train_params.mouth_reader``) to find that output's lips parted as far as the driver's did (:mod:`.cross_identity`;
``train_params.cross_closed_mouth_first`` starts each such item from its pair's more closed mouth),
and ``loss_weights.distill`` pulls that output towards a frozen teacher's (``train_params.teacher``, :mod:`.teacher`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..modules.mouth_interior import mouth_interior
from ..modules.util import AntiAliasInterpolation2d, keypoint_indices
from .cross_identity import (
    closed_mouth_first, cross_targets, frozen_forward, keypoint_consistency, mouth_opening_change, mouth_opening_loss,
)
from .landmark_targets import ANCHOR_NAMES, check_keypoint_indices
from .transform import Transform


# the mouth loss's crop: the inner lips and mouth corners, 1.6x the corner distance wide, seen at 48x48 (ONet's input)
MOUTH_ANCHORS = tuple(ANCHOR_NAMES.index(n) for n in ('upper_lip', 'lower_lip', 'mouth_right', 'mouth_left'))
MOUTH_CROP_SCALE = 1.6
MOUTH_CROP_SIZE = 48


class ImagePyramide(nn.Module):
    """{'prediction_<scale>': image downscaled by AntiAliasInterpolation2d} for each scale."""

    def __init__(self, scales, num_channels: int):
        super().__init__()
        self.downs = nn.ModuleDict({str(s).replace('.', '-'): AntiAliasInterpolation2d(num_channels, s)
                                    for s in scales})

    def forward(self, x: torch.Tensor) -> dict:
        return {'prediction_' + k.replace('-', '.'): down(x) for k, down in self.downs.items()}


def detach_kp(kp: dict) -> dict:
    return {k: v.detach() for k, v in kp.items()}


def target_frame(x: dict) -> torch.Tensor:
    """The frame the generator must reproduce: 'driving', or its restyled copy 'driving_target' when the batch
    has one (dataset_params.painting_style; keypoints still come from the camera frame 'driving')."""
    return x.get('driving_target', x['driving'])


# the loss terms that read per-frame Face Mesh landmark targets: the trainer loads the targets when one is on
LANDMARK_TERMS = ('landmarks', 'mouth', 'mouth_occlusion', 'cross_mouth')


def loss_weights(train_params: dict) -> dict:
    """The config's loss weights with defaults for keys older configs lack (l1 = 0: the original has none)."""
    w = dict(train_params.get('loss_weights', {}))
    w.setdefault('perceptual', [0])
    w.setdefault('generator_gan', 0)
    w.setdefault('discriminator_gan', 1)
    w.setdefault('feature_matching', [0])
    w.setdefault('equivariance_value', 0)
    w.setdefault('equivariance_jacobian', 0)
    w.setdefault('l1', 0)
    w.setdefault('landmarks', 0)
    w.setdefault('mouth', 0)
    w.setdefault('mouth_occlusion', 0)
    w.setdefault('cross_keypoints', 0)
    w.setdefault('cross_mouth', 0)
    w.setdefault('distill', 0)
    return w


def landmark_loss(kp_value: torch.Tensor, target: torch.Tensor, indices: list[int]) -> torch.Tensor:
    """Mean L1 between keypoints ``indices`` of (B, K, 2) values and (B, A, 2) targets; NaN targets are skipped."""
    chosen = kp_value[:, indices].float()
    known = torch.isfinite(target).all(-1, keepdim=True)
    target = torch.where(known, target, chosen.detach())  # a zero difference (and gradient) where no face was found
    return torch.abs(chosen - target).sum() / (known.sum() * 2).clamp(min=1)


def _mouth_anchors(targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 4, 2) mouth anchors of (B, A, 2) landmark targets (MOUTH_ANCHORS order; zeros where no face was found)
    and (B,) which samples have a face."""
    mouth = targets[:, list(MOUTH_ANCHORS)].float()
    known = torch.isfinite(mouth).all(-1).all(-1)
    return torch.where(known[:, None, None], mouth, torch.zeros_like(mouth)), known


def mouth_crops(images: torch.Tensor, targets: torch.Tensor, size: int = MOUTH_CROP_SIZE,
                align_corners: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, C, size, size) square crops around each image's mouth, and which samples have one (a face was found).

    ``targets`` are the (B, A, 2) landmark anchors of :mod:`.landmark_targets` in keypoint coordinates; the crop
    is centred on the four mouth anchors and MOUTH_CROP_SCALE times as wide as the inner mouth corners are apart.
    """
    mouth, known = _mouth_anchors(targets)
    corners = mouth[:, 2] - mouth[:, 3]  # MOUTH_ANCHORS order: upper lip, lower lip, right corner, left corner
    half = (MOUTH_CROP_SCALE / 2 * corners.norm(dim=-1)).clamp(min=0.05)
    theta = torch.zeros(len(images), 2, 3, device=images.device, dtype=torch.float32)
    theta[:, 0, 0] = theta[:, 1, 1] = half
    theta[:, :, 2] = mouth.mean(1)
    grid = F.affine_grid(theta, [len(images), images.shape[1], size, size], align_corners=align_corners)
    return F.grid_sample(images.float(), grid, align_corners=align_corners), known


def _mouth_ellipses(source: torch.Tensor, driving: torch.Tensor, size: tuple[int, int], supersample: int = 4
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`~fomm_model.modules.mouth_interior.mouth_interior` of (B, A, 2) landmark targets, and (B,) which
    samples have both mouths."""
    (mouth_s, known_s), (mouth_d, known_d) = _mouth_anchors(source), _mouth_anchors(driving)
    revealed, around = mouth_interior(mouth_s, mouth_d, size, supersample)
    return revealed, around, known_s & known_d


def mouth_occlusion_loss(occlusion_logits: torch.Tensor, source_landmarks: torch.Tensor,
                         driving_landmarks: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of the occlusion map (from its logits) against 1 - (the mouth interior the driving
    frame shows and the source does not), averaged over that interior and, with the same total weight, over the
    lips and skin around it.

    Why: every model trained here left the occlusion map ~1 everywhere, so an opening mouth was filled with
    stretched lips instead of a dark interior, and across people the mouth opened a quarter as far as the driver's.
    Marking the interior the source never shows as occluded lets the generator paint it. The two areas weigh
    alike, so the larger surroundings cannot win by keeping the whole map at 1; cross-entropy on the logits keeps
    a gradient where the map has saturated at 1, which an L1 on the map does not.
    """
    revealed, around, known = _mouth_ellipses(source_landmarks, driving_landmarks, occlusion_logits.shape[2:])
    opening = known & (revealed.sum((1, 2, 3)) > 0)
    if not opening.any():
        return occlusion_logits.sum() * 0
    logits, revealed, around = occlusion_logits[opening].float(), revealed[opening], around[opening]
    surroundings = (around - revealed).clamp(min=0)
    weight = revealed / revealed.sum() + surroundings / surroundings.sum().clamp(min=1e-6)
    return F.binary_cross_entropy_with_logits(logits, 1 - revealed, weight=weight, reduction='sum')


def generator_gan_loss(maps: dict, scales, weight: float) -> torch.Tensor:
    """LSGAN generator term: the discriminator's maps of generated images pulled towards 1, summed over scales."""
    total = 0
    for scale in scales:
        total = total + weight * ((1 - maps['prediction_map_%s' % scale]) ** 2).mean()
    return total


class GeneratorFullModel(nn.Module):
    """Keypoints + generation + every generator-side loss, as the original (one forward per step)."""

    def __init__(self, kp_extractor: nn.Module, generator: nn.Module, discriminator: nn.Module | None,
                 train_params: dict, perceptual_net: nn.Module | None = None, align_corners: bool = True):
        super().__init__()
        self.kp_extractor = kp_extractor
        self.generator = generator
        self.discriminator = discriminator
        self.train_params = train_params
        self.scales = train_params['scales']
        self.disc_scales = discriminator.scales if discriminator is not None else [1]
        self.pyramid = ImagePyramide(self.scales, generator.num_channels if hasattr(generator, 'num_channels')
                                     else 3)
        self.loss_weights = loss_weights(train_params)
        self.align_corners = align_corners
        if sum(self.loss_weights['perceptual']) != 0 and perceptual_net is None:
            raise ValueError("loss_weights.perceptual is non-zero but no pretrained perceptual network was given")
        self.vgg = perceptual_net
        if self.loss_weights['generator_gan'] != 0 and discriminator is None:
            raise ValueError("loss_weights.generator_gan is non-zero but the config has no discriminator_params")
        self.landmark_keypoints = None
        if self.loss_weights['landmarks'] != 0:
            if 'landmark_keypoints' not in train_params:
                raise ValueError("loss_weights.landmarks is non-zero but train_params has no landmark_keypoints")
            self.landmark_keypoints = check_keypoint_indices(train_params['landmark_keypoints'],
                                                             kp_extractor.kp.out_channels)
        self.cross_keypoints = None
        if self.loss_weights['cross_keypoints'] != 0:
            if 'cross_keypoints' not in train_params:
                raise ValueError("loss_weights.cross_keypoints is non-zero but train_params has no cross_keypoints")
            indices = list(train_params['cross_keypoints'])
            self.cross_keypoints = keypoint_indices(indices, len(indices), kp_extractor.kp.out_channels,
                                                    'train_params.cross_keypoints', 'keypoint to check')
        self.cross_centred = bool(train_params.get('cross_keypoints_centred', False))
        self.cross_closed_first = bool(train_params.get('cross_closed_mouth_first', False))
        if self.cross_closed_first and not any(self.loss_weights[k] != 0 for k in LANDMARK_TERMS):
            raise ValueError("train_params.cross_closed_mouth_first needs landmark targets (one of loss_weights."
                             f"{', '.join(LANDMARK_TERMS)}) to tell which frame's mouth is closed")
        self.mouth_reader = None
        if self.loss_weights['cross_mouth'] != 0:
            if not train_params.get('mouth_reader'):
                raise ValueError("loss_weights.cross_mouth is non-zero but train_params has no mouth_reader (a "
                                 "checkpoint of python -m fomm_model.training.mouth_reader)")
            from .mouth_reader import MouthReader
            try:
                self.mouth_reader = MouthReader.load(train_params['mouth_reader'])
            except FileNotFoundError as exc:
                raise ValueError(f'train_params.mouth_reader: {exc}') from exc
        self.teacher = None
        if self.loss_weights['distill'] != 0:
            from .teacher import TeacherGenerator
            try:
                self.teacher = TeacherGenerator.load(train_params.get('teacher'))
            except FileNotFoundError as exc:
                raise ValueError(f'train_params.teacher: {exc}') from exc

    def image_loss(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Pixel L1 plus the perceptual loss (its weights / 10) between two image batches."""
        total = torch.abs(prediction - target).mean()
        if self.vgg is not None:
            for weight, a, b in zip(self.loss_weights['perceptual'], self.vgg(prediction), self.vgg(target)):
                if weight:
                    total = total + weight / 10 * torch.abs(a - b.detach()).mean()
        return total

    def mouth_loss(self, prediction: torch.Tensor, real: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """L1 plus the perceptual loss on crops around the real frame's mouth, over samples where a face was found.

        Why: the mouth is ~5% of a face crop, so the whole-image losses barely see whether it opened; the driver's
        open mouth came out at a fifth of its amplitude before this term.
        """
        pred, known = mouth_crops(prediction, targets, align_corners=self.align_corners)
        real, _ = mouth_crops(real, targets, align_corners=self.align_corners)
        if not known.any():
            return prediction.sum() * 0
        return self.image_loss(pred[known], real[known])

    def forward(self, x: dict, generator: torch.Generator | None = None) -> tuple[dict, dict]:
        w = self.loss_weights
        kp_source = self.kp_extractor(x['source'])
        kp_driving = self.kp_extractor(x['driving'])
        generated = self.generator(x['source'], kp_source=kp_source, kp_driving=kp_driving)
        generated.update({'kp_source': kp_source, 'kp_driving': kp_driving})
        losses = {}
        real = target_frame(x)
        pyramide_real = self.pyramid(real)
        pyramide_generated = self.pyramid(generated['prediction'])

        if sum(w['perceptual']) != 0:
            total = 0
            for scale in self.scales:
                x_f = self.vgg(pyramide_generated['prediction_' + str(scale)])
                y_f = self.vgg(pyramide_real['prediction_' + str(scale)])
                for weight, a, b in zip(w['perceptual'], x_f, y_f):
                    if weight:
                        total = total + weight * torch.abs(a - b.detach()).mean()
            losses['perceptual'] = total

        if w['l1']:
            losses['l1'] = w['l1'] * torch.abs(generated['prediction'] - real).mean()

        if self.landmark_keypoints is not None:
            if 'source_landmarks' not in x:
                raise ValueError("loss_weights.landmarks is non-zero but the batch has no landmark targets")
            losses['landmarks'] = w['landmarks'] * 0.5 * (
                landmark_loss(kp_source['value'], x['source_landmarks'], self.landmark_keypoints)
                + landmark_loss(kp_driving['value'], x['driving_landmarks'], self.landmark_keypoints))

        if w['mouth'] != 0:
            if 'driving_landmarks' not in x:
                raise ValueError("loss_weights.mouth is non-zero but the batch has no landmark targets")
            losses['mouth'] = w['mouth'] * self.mouth_loss(generated['prediction'], real, x['driving_landmarks'])

        if w['mouth_occlusion'] != 0:
            if 'driving_landmarks' not in x or 'occlusion_logits' not in generated:
                raise ValueError("loss_weights.mouth_occlusion is non-zero but the batch has no landmark targets or "
                                 "the generator estimates no occlusion map (estimate_occlusion_map)")
            losses['mouth_occlusion'] = w['mouth_occlusion'] * mouth_occlusion_loss(
                generated['occlusion_logits'], x['source_landmarks'], x['driving_landmarks'])

        if self.cross_keypoints is not None or self.mouth_reader is not None or self.teacher is not None:
            self.cross_identity(x, kp_source, kp_driving, generated, losses)

        if w['generator_gan'] != 0:
            maps_generated = self.discriminator(pyramide_generated, kp=detach_kp(kp_driving))
            maps_real = self.discriminator(pyramide_real, kp=detach_kp(kp_driving))
            losses['gen_gan'] = generator_gan_loss(maps_generated, self.disc_scales, w['generator_gan'])
            if sum(w['feature_matching']) != 0:
                total = 0
                for scale in self.disc_scales:
                    key = 'feature_maps_%s' % scale
                    for weight, a, b in zip(w['feature_matching'], maps_real[key], maps_generated[key]):
                        if weight:
                            total = total + weight * torch.abs(a - b).mean()
                losses['feature_matching'] = total

        if w['equivariance_value'] != 0 or w['equivariance_jacobian'] != 0:
            transform = Transform(x['driving'].shape[0], **self.train_params['transform_params'],
                                  align_corners=self.align_corners, device=x['driving'].device,
                                  generator=generator)
            transformed_frame = transform.transform_frame(x['driving'])
            transformed_kp = self.kp_extractor(transformed_frame)
            generated['transformed_frame'] = transformed_frame
            generated['transformed_kp'] = transformed_kp
            if w['equivariance_value'] != 0:
                value = torch.abs(kp_driving['value'] - transform.warp_coordinates(transformed_kp['value'])).mean()
                losses['equivariance_value'] = w['equivariance_value'] * value
            if w['equivariance_jacobian'] != 0:
                jacobian_transformed = transform.jacobian(transformed_kp['value']) @ transformed_kp['jacobian']
                value = torch.inverse(kp_driving['jacobian'].float()) @ jacobian_transformed.float()
                eye = torch.eye(2, device=value.device).view(1, 1, 2, 2)
                losses['equivariance_jacobian'] = w['equivariance_jacobian'] * torch.abs(eye - value).mean()
        return losses, generated

    def cross_identity(self, x: dict, kp_source: dict, kp_driving: dict, generated: dict, losses: dict) -> None:
        """Each source driven by the previous item's motion (its own source frame as the anchor): the keypoint
        consistency loss, the frozen reader's mouth-opening loss and/or the teacher's, and the adversarial loss on
        those outputs too, so that the generator meets them with faces rather than with patterns only a reader
        sees. Adds 'cross_prediction' and 'kp_cross' to ``generated`` for the discriminator's update."""
        w = self.loss_weights
        source, kp_source, kp_driving = x['source'], detach_kp(kp_source), detach_kp(kp_driving)
        source_landmarks, driving_landmarks = x.get('source_landmarks'), x.get('driving_landmarks')
        if self.cross_closed_first:   # each item's closed-mouth frame as the source, driven by another item opening
            if source_landmarks is None:
                raise ValueError("train_params.cross_closed_mouth_first is set but the batch has no landmark targets")
            kp_target = kp_driving
            if 'driving_target' in x:   # a painted target: its keypoints from the painted image, as an avatar's are
                with torch.no_grad():   # frozen: the batch-norm statistics do not learn from this extra pass
                    kp_target = detach_kp(frozen_forward(self.kp_extractor, x['driving_target']))
            source, kp_source, kp_driving, source_landmarks, driving_landmarks = closed_mouth_first(
                (source, target_frame(x)), (kp_source, kp_target), (source_landmarks, driving_landmarks))
        target = cross_targets(kp_source, kp_driving)
        cross = self.generator(source, kp_source=kp_source, kp_driving=target)['prediction']
        if self.cross_keypoints is not None:
            detected = frozen_forward(self.kp_extractor, cross)
            losses['cross_keypoints'] = w['cross_keypoints'] * keypoint_consistency(
                detected['value'], target['value'], self.cross_keypoints, centred=self.cross_centred)
        if self.mouth_reader is not None:
            if source_landmarks is None:
                raise ValueError("loss_weights.cross_mouth is non-zero but the batch has no landmark targets")
            reader = self.mouth_reader.to(cross.device)
            change, known = mouth_opening_change(source_landmarks, driving_landmarks)
            with torch.no_grad():
                read_source = reader(source)
            losses['cross_mouth'] = w['cross_mouth'] * mouth_opening_loss(reader(cross), read_source, change, known)
        if self.teacher is not None:
            taught = self.teacher.to(cross.device)(source, kp_source, target)
            losses['distill'] = w['distill'] * self.image_loss(cross.float(), taught)
        if w['generator_gan'] != 0:
            maps = self.discriminator(self.pyramid(cross), kp=target)
            losses['cross_gan'] = generator_gan_loss(maps, self.disc_scales, w['generator_gan'])
        generated['cross_prediction'], generated['kp_cross'] = cross, target


class DiscriminatorFullModel(nn.Module):
    """LSGAN discriminator loss on real driving frames vs detached predictions (kp heatmaps detached), and vs the
    cross-identity predictions when the generator made them (``loss_weights.cross_keypoints`` or ``cross_mouth``)."""

    def __init__(self, kp_extractor: nn.Module | None, generator: nn.Module | None, discriminator: nn.Module,
                 train_params: dict):
        super().__init__()
        self.discriminator = discriminator
        self.train_params = train_params
        self.scales = discriminator.scales
        self.pyramid = ImagePyramide(train_params['scales'], 3)
        self.loss_weights = loss_weights(train_params)

    def forward(self, x: dict, generated: dict) -> dict:
        pyramide_real = self.pyramid(target_frame(x))
        pyramide_generated = self.pyramid(generated['prediction'].detach())
        kp_driving = detach_kp(generated['kp_driving'])
        maps_generated = self.discriminator(pyramide_generated, kp=kp_driving)
        maps_real = self.discriminator(pyramide_real, kp=kp_driving)
        total = 0
        for scale in self.scales:
            key = 'prediction_map_%s' % scale
            value = (1 - maps_real[key]) ** 2 + maps_generated[key] ** 2
            total = total + self.loss_weights['discriminator_gan'] * value.mean()
        if 'cross_prediction' in generated:
            maps_cross = self.discriminator(self.pyramid(generated['cross_prediction'].detach()),
                                            kp=detach_kp(generated['kp_cross']))
            for scale in self.scales:
                total = total + self.loss_weights['discriminator_gan'] * (
                    maps_cross['prediction_map_%s' % scale] ** 2).mean()
        return {'disc_gan': total}
