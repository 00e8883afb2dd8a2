"""fomm_model: the First-Order Motion Model (Siarohin et al., NeurIPS 2019), faithful to the original code."""
from .animation import Animator, FrameGenerator
from .checkpoint import CheckpointError, CheckpointMismatchError, load_checkpoint, save_checkpoint
from .config import ConfigError, available_configs, load_config
from .demo import load_checkpoints, make_animation
from .keypoints import Keypoints, RelativeMotion, normalize_kp
from .models import Models, build_models

__version__ = '0.1.0'

__all__ = ['load_config', 'available_configs', 'build_models', 'Models', 'load_checkpoint', 'save_checkpoint',
           'normalize_kp', 'Keypoints', 'RelativeMotion', 'Animator', 'FrameGenerator', 'load_checkpoints',
           'make_animation',
           'CheckpointError', 'CheckpointMismatchError', 'ConfigError']
