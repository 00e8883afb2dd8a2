"""Networks of the First-Order Motion Model, with the original attribute names."""
from .dense_motion import DenseMotionNetwork
from .discriminator import Discriminator, MultiScaleDiscriminator
from .generator import OcclusionAwareGenerator
from .keypoint_detector import KPDetector

__all__ = ['KPDetector', 'DenseMotionNetwork', 'OcclusionAwareGenerator', 'Discriminator', 'MultiScaleDiscriminator']
