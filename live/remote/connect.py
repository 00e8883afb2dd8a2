"""The live app's side of ``--remote``: an :class:`~fomm_model.Animator` whose runner is on a model server."""
from __future__ import annotations

import logging
from typing import Any

from fomm_model import Animator
from fomm_model.inference import RunnerError

from ..options import ModelOptions
from .runner import RemoteRunner
from .tokens import TokenError, client_token

log = logging.getLogger(__name__)


def animator_on(runner: RemoteRunner, models: Any = None) -> Animator:
    """An Animator whose model is on the server: relative motion stays here, with the lip keypoints and the
    calibrated mouth gain of the server's model (with crops sent there is no model here to ask)."""
    animator = Animator(models, backend=runner, size=runner.size, mouth_keypoints=runner.info.mouth_keypoints,
                        mouth_gain=runner.info.mouth_gain)
    animator.default_mouth_gain = runner.info.mouth_gain
    return animator


def remote_animator(model: ModelOptions) -> Animator:
    """Connect to ``model.remote``; RunnerError (unreachable, refused, other model, no token) says what to do.

    Sending keypoints needs the model here too: its keypoint detector runs on an eager float32 torch runner on
    this CPU (the same graph as the server's), and the file's hash must match the server's. Sending crops
    needs no model here."""
    try:
        token, where = client_token(model.token_file)
    except TokenError as exc:
        raise RunnerError(str(exc)) from None
    keypoint_runner, key, models = None, None, None
    if model.remote_send == 'keypoints':
        from fomm_model.inference.torch_runner import TorchRunner

        from ..model_files import load_model
        models, key = load_model(model)
        keypoint_runner = TorchRunner(models, 'cpu')
    runner = RemoteRunner(model.remote, token, send=model.remote_send, codec=model.remote_codec,
                          keypoint_runner=keypoint_runner, model_key=key, token_source=where)
    log.info('model on %s', runner.describe())
    animator = animator_on(runner, models)
    animator.selection_reason = f'--remote {runner.url}, token from {where}, replica {runner.info.replica}'
    return animator
