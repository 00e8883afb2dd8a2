"""Training throughput (samples/s) of the full original training step, per config and device.

One step = kp detector on source, driving and the equivariance-warped driving frame, generator, perceptual
pyramid (VGG19 if its weights are found, else MTCNN ONet), equivariance losses, one backward and two Adam
steps (+ the discriminator step for GAN configs). Data are synthetic blob clips made in a temp folder and
batches are fetched before timing, so only compute is measured. The host is shared and noisy: medians
over ``--rounds`` timed steps after one warm-up step are reported.

    python -m benchmarks.bench_training [--configs tiny-128 face-128 vox-256] [--batch_size 2] [--rounds 3]
"""
from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from pathlib import Path

import torch
import yaml

from fomm_model.config import frame_size, load_config
from fomm_model.training.synthetic import make_dataset
from fomm_model.training.trainer import Trainer, TrainOptions

TINY = Path(__file__).resolve().parents[1].parent / 'shared' / 'fixtures' / 'reference' / 'tiny-128.yaml'


def config_for(name: str) -> dict:
    if name == 'tiny-128':
        if not TINY.is_file():
            raise SystemExit(f"tiny-128 needs {TINY}")
        return yaml.safe_load(TINY.read_text())
    return copy.deepcopy(dict(load_config(name)))


def bench(name: str, device: str, batch_size: int, rounds: int, data_root: Path, amp: str | None) -> dict:
    config = config_for(name)
    size = frame_size(config)
    root = data_root / f'{size[0]}x{size[1]}'
    if not root.is_dir():
        make_dataset(root, identities=2, clips_per_identity=1, num_frames=4, size=size[0])
    config['dataset_params'].update(root_dir=str(root), frame_shape=[size[0], size[1], 3])
    config['dataset_params'].pop('pairs_list', None)
    config['train_params'].update(num_repeats=max(2, batch_size * (rounds + 1)), batch_size=batch_size)
    with tempfile.TemporaryDirectory() as log_dir:
        trainer = Trainer(TrainOptions(config=config, log_dir=log_dir, device=device, amp=amp,
                                       tensorboard=False, progress=False, visualize=False))
        batches = [b for _, b in zip(range(rounds + 1), trainer.loader)]
        trainer.train_step(batches[0])
        times = []
        for x in batches[1:]:
            if device == 'cuda':
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            trainer.train_step(x)
            if device == 'cuda':
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        net = getattr(trainer.generator_full.vgg, 'name', '-')
    step = statistics.median(times)
    return {'config': name, 'device': device + (f'+{amp}' if amp else ''), 'batch': batch_size,
            'perceptual': net, 'step_s': step, 'samples_s': batch_size / step}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--configs', nargs='+', default=['tiny-128', 'face-128', 'vox-256'])
    p.add_argument('--batch_size', type=int, default=2)
    p.add_argument('--rounds', type=int, default=3)
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--devices', nargs='+', default=None, help='default: cpu, plus cuda when available')
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    devices = args.devices or (['cpu', 'cuda'] if torch.cuda.is_available() else ['cpu'])
    rows = []
    with tempfile.TemporaryDirectory(prefix='bench-training-') as data:
        for device in devices:
            for amp in ([None, 'bf16'] if device == 'cuda' else [None]):
                for name in args.configs:
                    rows.append(bench(name, device, args.batch_size, args.rounds, Path(data), amp))
                    r = rows[-1]
                    print(f"{r['config']:<10} {r['device']:<9} batch {r['batch']}: {r['step_s']:.2f} s/step, "
                          f"{r['samples_s']:.2f} samples/s", flush=True)
    print(f"\n| config | device | batch | perceptual net | s/step | samples/s |  (threads {args.threads})")
    print('|---|---|---|---|---|---|')
    for r in rows:
        print(f"| {r['config']} | {r['device']} | {r['batch']} | {r['perceptual']} | {r['step_s']:.2f} | "
              f"{r['samples_s']:.2f} |")
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
