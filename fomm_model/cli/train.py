"""Train a FOMM model (keypoint detector + generator [+ discriminator]) from a folder of videos.

The dataset root holds train/ and test/ with one video per entry: a folder of frames, a video file, or a
horizontal .png/.jpg strip. Checkpoints in the original layout go to LOG_DIR every checkpoint_freq epochs, at
the end, at --max_steps and on Ctrl-C/SIGTERM; --checkpoint resumes exactly where one stopped. A LOG_DIR that
holds another run's checkpoints is refused unless --overwrite (which deletes that run) is given.
Multi-GPU: torchrun --nproc_per_node N -m fomm_model train --device cuda --device_ids 0,1,...
"""
from __future__ import annotations

import argparse

from . import CliError


def _ids(text: str) -> list[int]:
    try:
        return [int(t) for t in text.split(',') if t.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--device_ids wants comma-separated GPU numbers like 0,1: {text!r}") from exc


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--config', required=True, help='config name (e.g. face-128, vox-256) or YAML path')
    parser.add_argument('--log_dir', required=True, help='folder for checkpoints, log.txt, images, TensorBoard')
    parser.add_argument('--checkpoint', help='resume from this checkpoint (continues at the step after it)')
    parser.add_argument('--overwrite', action='store_true',
                        help='start over in a LOG_DIR that holds checkpoints: deletes that run (checkpoints, '
                             'log.txt, train-vis images, TensorBoard events) first')
    parser.add_argument('--init_from', help='start a new run from these weights (generator + kp detector); a '
                                            'config with more keypoints grows them (fomm_model.training.warm_start)')
    parser.add_argument('--data', help='dataset root with train/ and test/ (overrides dataset_params.root_dir)')
    parser.add_argument('--max_steps', type=int, help='stop (and save) after this many optimiser steps in total')
    parser.add_argument('--epochs', type=int, help='override train_params.num_epochs')
    parser.add_argument('--batch_size', type=int, help='override train_params.batch_size (per GPU)')
    parser.add_argument('--num_repeats', type=int, help='override train_params.num_repeats')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    parser.add_argument('--device_ids', type=_ids, default=None, help='GPUs, e.g. 0,1 (several need torchrun)')
    parser.add_argument('--num_workers', type=int, default=0, help='DataLoader worker processes')
    parser.add_argument('--amp', nargs='?', const='bf16', choices=['bf16', 'fp16'],
                        help='mixed precision: bf16 autocast (CUDA, or CPUs with AVX512-BF16: ~3-7x faster here) or fp16 with a GradScaler (CUDA only)')
    parser.add_argument('--perceptual', default='auto', choices=['auto', 'vgg19', 'onet'],
                        help='perceptual-loss network: VGG19 (original; needs its weights) or MTCNN ONet')
    parser.add_argument('--vgg_weights', help="torchvision VGG19 weights file (vgg19-dcbb9e9d.pth); "
                                              "default $FOMM_VGG19_WEIGHTS or the torch hub cache")
    parser.add_argument('--threads', type=int, help='torch CPU threads (default: torch default)')
    parser.add_argument('--no_tensorboard', action='store_true')
    parser.add_argument('--no_progress', action='store_true', help='no tqdm bar')


def run(args: argparse.Namespace) -> int:
    import torch

    from ..training.perceptual import PerceptualWeightsError
    from ..training.trainer import TrainingError, TrainOptions, train
    from ..training.video_frames import VideoReadError

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.max_steps is not None and args.max_steps < 1:
        raise CliError('--max_steps must be >= 1')
    if args.num_workers < 0:
        raise CliError('--num_workers must be >= 0')
    opts = TrainOptions(config=args.config, log_dir=args.log_dir, checkpoint=args.checkpoint, init_from=args.init_from,
                        overwrite=args.overwrite, data=args.data,
                        max_steps=args.max_steps, epochs=args.epochs, batch_size=args.batch_size,
                        num_repeats=args.num_repeats, seed=args.seed, device=args.device,
                        device_ids=args.device_ids, num_workers=args.num_workers, amp=args.amp,
                        perceptual=args.perceptual, vgg_weights=args.vgg_weights,
                        tensorboard=not args.no_tensorboard, progress=not args.no_progress)
    try:
        result = train(opts)
    except (TrainingError, PerceptualWeightsError, VideoReadError) as exc:
        raise CliError(str(exc)) from exc
    print(f"step {result.step}, next epoch {result.epoch}, lr {result.lr.get('generator'):.3g}, "
          f"checkpoint {result.checkpoint}")
    return 130 if result.interrupted else 0
