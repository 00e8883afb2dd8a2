"""The training loop of the original train.py, made resumable, interruptible, logged and DDP-ready.

Differences from the original, on purpose: resuming starts at the NEXT epoch (the original re-ran the saved
one), checkpoints also hold ``step``/``next_epoch``/``next_batch``/``scheduler_*`` so a run interrupted
mid-epoch (SIGINT, SIGTERM, --max_steps) resumes exactly where it stopped, and every random draw is seeded by
(seed, epoch, position) or (seed, step), so results do not depend on the number of data workers.
"""
from __future__ import annotations

import bisect
import contextlib
import logging
import os
import signal
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml
from torch.optim.lr_scheduler import MultiStepLR
from torch.utils.data import DataLoader

from ..checkpoint import atomic_save, fitting_state, read_checkpoint
from ..config import load_config
from ..models import build_models
from ..output_paths import atomic_write_text, check_output_dir, remove_stale_temp_files, same_file
from .dataset import EpochSampler, FramesDataset
from .full_model import LANDMARK_TERMS, DiscriminatorFullModel, GeneratorFullModel, loss_weights
from .logger import LossLogger, remove_logs
from .perceptual import load_perceptual_net
from .visualizer import save_grid

log = logging.getLogger(__name__)


CHECKPOINT_GLOB = '*-checkpoint.pth.tar'  # what Trainer.save writes: '<zero-padded epoch>-checkpoint.pth.tar'
SHORT = {'perceptual': 'perc', 'equivariance_value': 'eq_val', 'equivariance_jacobian': 'eq_jac',
         'feature_matching': 'fm', 'gen_gan': 'g_gan', 'disc_gan': 'd_gan', 'l1': 'l1', 'landmarks': 'lm',
         'mouth': 'mouth', 'mouth_occlusion': 'm_occ',
         'cross_keypoints': 'x_kp', 'cross_mouth': 'x_mouth', 'cross_gan': 'x_gan'}


class TrainingError(RuntimeError):
    """A training setup the user must fix (bad device, missing data...)."""


@dataclass
class TrainOptions:
    """Everything ``fomm train`` can set; None means 'as in the config'."""

    config: str | dict
    log_dir: str | Path
    checkpoint: str | Path | None = None
    init_from: str | Path | None = None  # start from these weights (a new run; keypoints may be grown)
    overwrite: bool = False  # start over in a log_dir holding another run: delete that run's files first
    data: str | Path | None = None
    max_steps: int | None = None
    epochs: int | None = None
    batch_size: int | None = None
    num_repeats: int | None = None
    seed: int = 0
    device: str = 'cpu'
    device_ids: list[int] | None = None
    num_workers: int = 0
    amp: str | None = None  # None, 'bf16' or 'fp16' (CUDA only)
    perceptual: str = 'auto'
    vgg_weights: str | Path | None = None
    tensorboard: bool = True
    progress: bool = True
    visualize: bool = True
    cache_bytes: int = 4 << 30


@dataclass
class TrainResult:
    step: int
    epoch: int  # next epoch to run
    checkpoint: Path | None
    lr: dict[str, float]
    epoch_losses: list[dict[str, float]] = field(default_factory=list)
    interrupted: bool = False


class _StopFlag:
    """SIGINT/SIGTERM set a flag checked after each step (a second SIGINT aborts at once)."""

    def __init__(self):
        self.signum: int | None = None
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: no signal handling
                pass
        return self

    def _handle(self, signum, frame):
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum
        log.warning("received signal %d: saving a checkpoint after the current step", signum)

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


def _distributed() -> tuple[int, int, int]:
    """(rank, local_rank, world_size) from torchrun's environment."""
    world = int(os.environ.get('WORLD_SIZE', '1'))
    return int(os.environ.get('RANK', '0')), int(os.environ.get('LOCAL_RANK', '0')), world


def resolve_device(opts: TrainOptions, local_rank: int, world: int) -> torch.device:
    if opts.device not in ('cpu', 'cuda'):
        raise TrainingError(f"--device must be cpu or cuda, not {opts.device!r}")
    if opts.device == 'cpu':
        if opts.amp == 'fp16':
            raise TrainingError("--amp fp16 needs --device cuda; on the CPU use --amp bf16")
        if opts.amp == 'bf16' and not torch.cpu._is_avx512_bf16_supported():
            log.warning("--amp bf16 on a CPU without AVX512-BF16: it will run, but likely slower than float32")
        return torch.device('cpu')
    if not torch.cuda.is_available():
        raise TrainingError("--device cuda was asked for but CUDA is not available (no GPU or a CPU-only torch "
                            "build); use --device cpu")
    ids = opts.device_ids or [0]
    if world > 1:
        if local_rank >= len(ids):
            raise TrainingError(f"LOCAL_RANK {local_rank} has no entry in --device_ids {ids}")
        index = ids[local_rank]
    else:
        if len(ids) > 1:
            raise TrainingError(f"--device_ids {ids}: several GPUs need torchrun, e.g. "
                                f"torchrun --nproc_per_node {len(ids)} -m fomm_model train ...")
        index = ids[0]
    if index >= torch.cuda.device_count():
        raise TrainingError(f"GPU {index} does not exist ({torch.cuda.device_count()} visible)")
    torch.cuda.set_device(index)
    return torch.device('cuda', index)


def apply_overrides(config: dict, opts: TrainOptions) -> dict:
    for section in ('train_params', 'dataset_params'):
        if not isinstance(config.get(section), dict):
            raise TrainingError(f"config {getattr(config, 'source', '')} has no '{section}' section: "
                                f"start from a shipped training config such as vox-256 or face-128")
    tp, dp = config['train_params'], config['dataset_params']
    missing = [k for k in ('num_epochs', 'batch_size', 'scales', 'lr_generator', 'lr_kp_detector',
                           'lr_discriminator') if k not in tp]
    if missing:
        raise TrainingError(f"train_params lacks {', '.join(missing)}")
    if opts.data is not None:
        dp['root_dir'] = str(opts.data)
    for key, value in (('num_epochs', opts.epochs), ('batch_size', opts.batch_size),
                       ('num_repeats', opts.num_repeats)):
        if value is not None:
            if int(value) < 1:
                raise TrainingError(f"--{key.replace('num_', '') if key != 'num_repeats' else key} must be >= 1")
            tp[key] = int(value)
    return config


def run_checkpoints(log_dir: str | Path) -> list[Path]:
    """The checkpoints a run wrote into ``log_dir``, oldest first (names are zero-padded epochs)."""
    log_dir = Path(log_dir)
    return sorted(log_dir.glob(CHECKPOINT_GLOB)) if log_dir.is_dir() else []


def lr_at(base: float, milestones: list[int], epoch: int, gamma: float = 0.1) -> float:
    """MultiStepLR's learning rate during ``epoch``."""
    return base * gamma ** bisect.bisect_right(sorted(milestones), epoch)


class Trainer:
    """Owns models, optimisers, schedulers, data and the loop; ``run()`` trains until done or stopped."""

    def __init__(self, opts: TrainOptions):
        self.opts = opts
        self.rank, self.local_rank, self.world = _distributed()
        self.device = resolve_device(opts, self.local_rank, self.world)
        if self.world > 1 and not torch.distributed.is_initialized():
            torch.distributed.init_process_group('nccl' if self.device.type == 'cuda' else 'gloo')
        self.is_main = self.rank == 0
        self.config = apply_overrides(load_config(opts.config), opts)
        self.tp = self.config['train_params']
        self.weights = loss_weights(self.tp)
        self.use_gan = self.weights['generator_gan'] != 0
        self.log_dir = Path(opts.log_dir)
        if self.is_main:
            remove_stale_temp_files(self.log_dir)  # of a save killed mid-write (kill -9); logged
        self._check_log_dir()
        torch.manual_seed(opts.seed)

        self.models = build_models(self.config)
        if self.models.discriminator is None and self.use_gan:
            raise TrainingError("loss_weights.generator_gan is non-zero but the config has no discriminator_params")
        if self.world > 1 and self.device.type == 'cuda':
            self.models.kp_detector = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.models.kp_detector)
            self.models.generator = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.models.generator)
        self.models.to(self.device).train()

        betas = (0.5, 0.999)
        self.optimizers = {
            'generator': torch.optim.Adam(self.models.generator.parameters(), lr=self.tp['lr_generator'],
                                          betas=betas),
            'kp_detector': torch.optim.Adam(self.models.kp_detector.parameters(), lr=self.tp['lr_kp_detector'],
                                            betas=betas),
        }
        if self.models.discriminator is not None:
            self.optimizers['discriminator'] = torch.optim.Adam(self.models.discriminator.parameters(),
                                                                lr=self.tp['lr_discriminator'], betas=betas)
        self.milestones = list(self.tp.get('epoch_milestones') or [])
        self.schedulers = {k: MultiStepLR(o, self.milestones, gamma=0.1) for k, o in self.optimizers.items()}
        self.step, self.start_epoch, self.start_batch = 0, 0, 0
        if opts.checkpoint:
            self._resume(opts.checkpoint)

        perceptual = None
        if sum(self.weights['perceptual']) != 0:
            perceptual = load_perceptual_net(opts.perceptual, opts.vgg_weights).to(self.device)
            if self.is_main:
                log.info("perceptual loss network: %s", perceptual.name)
        align = self.config['model_params']['common_params'].get('align_corners', True)
        try:
            self.generator_full = GeneratorFullModel(self.models.kp_detector, self.models.generator,
                                                     self.models.discriminator, self.tp, perceptual, align)
        except ValueError as exc:  # a loss the config asks for without what it needs
            raise TrainingError(f"config {getattr(self.config, 'source', opts.config)}: {exc}") from exc
        self.discriminator_full = (DiscriminatorFullModel(None, None, self.models.discriminator, self.tp)
                                   if self.use_gan else None)
        self.generator_full.to(self.device)
        if self.discriminator_full is not None:
            self.discriminator_full.to(self.device)
        self.gen_step_module, self.disc_step_module = self.generator_full, self.discriminator_full
        if self.world > 1:
            self._wrap_ddp()

        self.amp_dtype = {None: None, 'bf16': torch.bfloat16, 'fp16': torch.float16}[opts.amp]
        self.scaler = torch.amp.GradScaler('cuda') if opts.amp == 'fp16' else None
        self.disc_scaler = torch.amp.GradScaler('cuda') if opts.amp == 'fp16' else None

        dp = self.config['dataset_params']
        self.dataset = FramesDataset(is_train=True, random_seed=opts.seed, cache_bytes=opts.cache_bytes, **dp)
        if (any(self.weights[k] != 0 for k in LANDMARK_TERMS)
                or self.dataset.mouth_contrast > 0):
            self.dataset.landmark_targets = self._landmark_targets()
        self.sampler = EpochSampler(len(self.dataset), self.tp.get('num_repeats', 1), seed=opts.seed,
                                    rank=self.rank, world_size=self.world)
        self.dataset.epoch_length = self.sampler.n
        self.batch_size = int(self.tp['batch_size'])
        if self.sampler.n // self.world < self.batch_size:
            raise TrainingError(f"batch_size {self.batch_size} is larger than an epoch ({self.sampler.n} samples "
                                f"per rank); lower --batch_size or raise --num_repeats")
        self.loader = DataLoader(self.dataset, batch_size=self.batch_size, sampler=self.sampler, drop_last=True,
                                 num_workers=opts.num_workers, persistent_workers=opts.num_workers > 0,
                                 pin_memory=self.device.type == 'cuda')
        self.last_checkpoint: Path | None = None
        if opts.init_from and not opts.checkpoint:
            self._warm_start(opts.init_from)
        if self.is_main and opts.overwrite:  # only now: every check above has passed
            self._clear_previous_run()
        self.logger = LossLogger(self.log_dir, tensorboard=opts.tensorboard) if self.is_main else None

    def _landmark_targets(self) -> dict:
        """Face-landmark targets of the dataset's clips at its frame size (computed once by the main rank, cached
        in log_dir)."""
        from .landmark_targets import load_or_compute
        if self.world > 1 and not self.is_main:
            torch.distributed.barrier()  # wait for the main rank to compute and cache them
        try:
            targets = load_or_compute(self.dataset.videos, self.dataset.frame_shape[:2], self.log_dir,
                                      progress=self.is_main and self.opts.progress)
        except RuntimeError as exc:
            raise TrainingError(str(exc)) from exc
        if self.world > 1 and self.is_main:
            torch.distributed.barrier()
        return targets

    def _warm_start(self, path) -> None:
        from .warm_start import WarmStartError, warm_start
        sample = [self.dataset.get(i)['source'] for i in range(min(len(self.dataset), 32))]
        try:
            warm_start(self.models, path, torch.stack(sample).to(self.device), seed=self.opts.seed)
        except WarmStartError as exc:
            raise TrainingError(str(exc)) from exc

    # ----- checkpoints -----
    def _check_log_dir(self) -> None:
        """Refuse to write over another run's checkpoints; resuming one of this folder's own is fine."""
        check_output_dir(self.log_dir, what='--log_dir')
        existing = run_checkpoints(self.log_dir)
        resume = Path(self.opts.checkpoint) if self.opts.checkpoint else None
        continuing = resume is not None and same_file(resume.parent, self.log_dir)
        if continuing and self.opts.overwrite:
            raise TrainingError(f"--overwrite would delete {resume}, the checkpoint --checkpoint resumes; leave out "
                                f"--overwrite to continue that run")
        if not existing or self.opts.overwrite:
            return
        if continuing:
            later = [p.name for p in existing if p.name > resume.name]
            if later and self.is_main:
                log.warning("resuming %s: the later checkpoint(s) %s in %s will be replaced as this run reaches "
                            "them", resume, ', '.join(later), self.log_dir)
            return
        newest = existing[-1]
        doing = (f"resuming {resume} there" if resume else
                 "a new run from --init_from there" if self.opts.init_from else "a new run there")
        raise TrainingError(
            f"{self.log_dir} already holds the checkpoints of another run (newest: {newest}), and {doing} would "
            f"overwrite them. To continue that run: --checkpoint {newest}. To start over, deleting it: --overwrite. "
            f"Or choose another --log_dir.")

    def _clear_previous_run(self) -> None:
        """``--overwrite``: delete what an earlier run wrote into log_dir (only the names this trainer writes)."""
        checkpoints = run_checkpoints(self.log_dir)
        images = sorted((self.log_dir / 'train-vis').glob('*-rec.png'))
        for path in checkpoints + images:
            path.unlink()
        logs = remove_logs(self.log_dir)
        if checkpoints or images or logs:
            log.warning("--overwrite: deleted the previous run in %s: %d checkpoint(s)%s, %d image(s), %d log "
                        "file(s)", self.log_dir, len(checkpoints),
                        f" (newest {checkpoints[-1].name})" if checkpoints else '', len(images), len(logs))

    def _resume(self, path) -> None:
        ckpt = read_checkpoint(path)
        for name, module in self.models.modules().items():
            if name in ckpt:  # a checkpoint of another config fails here with the same message animate gives
                module.load_state_dict(fitting_state(module, ckpt, name, self.config, path))
            elif name != 'discriminator':
                raise TrainingError(f"checkpoint {path} has no '{name}' weights")
        for name, opt in self.optimizers.items():
            if f'optimizer_{name}' in ckpt:
                opt.load_state_dict(ckpt[f'optimizer_{name}'])
        if 'next_epoch' in ckpt:
            self.start_epoch = int(ckpt['next_epoch'])
            # in batches of the run that saved it; a new --batch_size resumes at the same sample
            saved_bs = int(ckpt.get('batch_size', self.tp['batch_size']))
            self.start_batch = int(ckpt.get('next_batch', 0)) * saved_bs // int(self.tp['batch_size'])
        else:  # an original checkpoint: 'epoch' is the last finished epoch; go on with the next one
            self.start_epoch, self.start_batch = int(ckpt.get('epoch', -1)) + 1, 0
        self.step = int(ckpt.get('step', 0))
        # the schedule follows the config, as in the original train.py: a changed one takes effect on resume
        # (the saved scheduler state is only compared, since loading it would bring back its milestones)
        saved = sorted(ckpt.get('scheduler_generator', {}).get('milestones', self.milestones))
        if saved != sorted(self.milestones) and self.is_main:
            log.warning("epoch_milestones %s from the config replace %s saved in the checkpoint",
                        sorted(self.milestones), saved)
        for name, sched in self.schedulers.items():
            sched.last_epoch = self.start_epoch
            for group, base_lr in zip(self.optimizers[name].param_groups, sched.base_lrs):  # config LRs
                group['initial_lr'] = base_lr
                group['lr'] = lr_at(base_lr, self.milestones, self.start_epoch)
        if self.is_main:
            log.info("resumed from %s: step %d, epoch %d, batch %d", path, self.step, self.start_epoch,
                     self.start_batch)

    def save(self, next_epoch: int, next_batch: int) -> Path | None:
        """Write ``<log_dir>/%08d-checkpoint.pth.tar`` atomically (main rank only)."""
        if not self.is_main:
            return None
        # original keys: 'epoch' is the last finished epoch (or the one in progress when stopped mid-epoch)
        finished = next_epoch - 1 if next_batch == 0 else next_epoch
        path = self.log_dir / ('%s-checkpoint.pth.tar' % str(max(finished, 0)).zfill(8))
        ckpt = {name: m.state_dict() for name, m in self.models.modules().items()}
        ckpt.update({f'optimizer_{k}': o.state_dict() for k, o in self.optimizers.items()})
        ckpt.update({'epoch': finished, 'step': self.step, 'next_epoch': next_epoch, 'next_batch': next_batch,
                     'batch_size': self.batch_size})
        ckpt.update({f'scheduler_{k}': s.state_dict() for k, s in self.schedulers.items()})
        atomic_save(ckpt, path)
        self.last_checkpoint = path
        return path

    # ----- one step -----
    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def train_step(self, x: dict) -> tuple[dict[str, float], dict]:
        """One generator(+kp) update and, for GAN configs, one discriminator update."""
        x = {k: v.to(self.device, non_blocking=True) for k, v in x.items() if torch.is_tensor(v)}
        gen = torch.Generator().manual_seed(self.opts.seed * 1_000_003 + self.step)  # equivariance warp draws
        with self._autocast():
            losses, generated = self.gen_step_module(x, generator=gen)
        loss = sum(v.float().mean() for v in losses.values())
        if not torch.isfinite(loss):
            raise TrainingError(f"non-finite loss at step {self.step}: "
                                f"{ {k: float(v.float().mean()) for k, v in losses.items()} }")
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizers['generator'])
            self.scaler.step(self.optimizers['kp_detector'])
            self.scaler.update()
        else:
            loss.backward()
            self.optimizers['generator'].step()
            self.optimizers['kp_detector'].step()
        self.optimizers['generator'].zero_grad(set_to_none=True)
        self.optimizers['kp_detector'].zero_grad(set_to_none=True)
        values = {k: float(v.detach().float().mean()) for k, v in losses.items()}
        if self.use_gan:
            opt = self.optimizers['discriminator']
            opt.zero_grad(set_to_none=True)
            with self._autocast():
                d_losses = self.disc_step_module(x, generated)
            d_loss = sum(v.float().mean() for v in d_losses.values())
            if self.disc_scaler is not None:
                self.disc_scaler.scale(d_loss).backward()
                self.disc_scaler.step(opt)
                self.disc_scaler.update()
            else:
                d_loss.backward()
                opt.step()
            opt.zero_grad(set_to_none=True)
            values.update({k: float(v.detach().float().mean()) for k, v in d_losses.items()})
        elif 'discriminator' in self.optimizers:
            self.optimizers['discriminator'].zero_grad(set_to_none=True)
        self.step += 1
        generated['_inputs'] = x
        return values, generated

    def _wrap_ddp(self) -> None:
        from torch.nn.parallel import DistributedDataParallel as DDP
        ids = [self.device.index] if self.device.type == 'cuda' else None
        if self.models.discriminator is not None:
            # the generator loss must not all-reduce discriminator grads (they are zeroed before the D step)
            ignore = ['discriminator.' + n for n, _ in self.models.discriminator.named_parameters()]
            ignore += ['discriminator.' + n for n, _ in self.models.discriminator.named_buffers()]
            DDP._set_params_and_buffers_to_ignore_for_model(self.generator_full, ignore)
        self.gen_step_module = DDP(self.generator_full, device_ids=ids)
        if self.discriminator_full is not None:
            self.disc_step_module = DDP(self.discriminator_full, device_ids=ids)

    def current_lr(self) -> dict[str, float]:
        return {k: o.param_groups[0]['lr'] for k, o in self.optimizers.items()}

    # ----- loop -----
    def nothing_to_train(self) -> str | None:
        """Why a resumed run is already done (at --max_steps, or past the last epoch), else None."""
        where = f"{self.opts.checkpoint} is at" if self.opts.checkpoint else "the run is at"
        if self.opts.max_steps is not None and self.step >= self.opts.max_steps:
            return (f"{where} step {self.step} and --max_steps is {self.opts.max_steps}: nothing to train; "
                    f"raise --max_steps to go on")
        if self.start_epoch >= int(self.tp['num_epochs']):
            return (f"{where} epoch {self.start_epoch}, past the last of the config's {self.tp['num_epochs']} "
                    f"epochs: nothing to train; raise --epochs to go on")
        return None

    def run(self) -> TrainResult:
        """Train until the config's last epoch, --max_steps or a signal; a run already done trains nothing."""
        done = self.nothing_to_train()
        if done is not None:
            if self.is_main:
                log.warning("%s", done)
            self.last_checkpoint = Path(self.opts.checkpoint) if self.opts.checkpoint else None
            epoch, history, interrupted = self.start_epoch, [], False
        else:
            epoch, history, interrupted = self._loop()
        if self.logger is not None:
            self.logger.close()
        if self.world > 1 and torch.distributed.is_initialized():
            torch.distributed.barrier()
            torch.distributed.destroy_process_group()
        if interrupted and self.is_main:
            log.warning("stopped by signal; checkpoint %s", self.last_checkpoint)
        return TrainResult(self.step, epoch, self.last_checkpoint, self.current_lr(),
                           history, interrupted)

    def _loop(self) -> tuple[int, list[dict[str, float]], bool]:
        """The epochs and steps; returns (next epoch, per-epoch mean losses, stopped by a signal)."""
        num_epochs = int(self.tp['num_epochs'])
        freq = int(self.tp.get('checkpoint_freq', 50))
        max_steps = self.opts.max_steps
        if self.is_main:
            atomic_write_text(yaml.safe_dump(dict(self.config), sort_keys=False), self.log_dir / 'config.yaml')
        history: list[dict[str, float]] = []
        interrupted = False
        epoch, batch_in_epoch = self.start_epoch, self.start_batch
        with _StopFlag() as stop:
            while epoch < num_epochs:
                skip = batch_in_epoch if epoch == self.start_epoch else 0
                self.sampler.set_epoch(epoch, start=skip * self.batch_size)
                batch_in_epoch = skip
                steps_per_epoch = self.sampler.n // self.world // self.batch_size
                bar = self._progress(epoch, num_epochs, steps_per_epoch, skip)
                generated = None
                stop_now = False
                for x in self.loader:
                    values, generated = self.train_step(x)
                    batch_in_epoch += 1
                    if self.logger is not None:
                        self.logger.log_step(self.step, values, self.current_lr()['generator'])
                    if bar is not None:
                        bar.set_postfix({SHORT.get(k, k): f'{v:.3f}' for k, v in values.items()}, refresh=False)
                        bar.update(1)
                    if stop.signum is not None or (max_steps is not None and self.step >= max_steps):
                        stop_now = True
                        break
                if bar is not None:
                    bar.close()
                if stop_now and batch_in_epoch < steps_per_epoch:
                    interrupted = stop.signum is not None
                    self.save(epoch, batch_in_epoch)
                    break
                with warnings.catch_warnings():  # the unused discriminator's optimiser never steps without GAN
                    warnings.filterwarnings('ignore', message='Detected call of')
                    for s in self.schedulers.values():
                        s.step()
                if self.logger is not None:
                    history.append(self.logger.log_epoch(epoch))
                    if self.opts.visualize and generated is not None:
                        kp_size = self.config.get('visualizer_params', {}).get('kp_size', 3)
                        save_grid(self.log_dir / 'train-vis' / ('%s-rec.png' % str(epoch).zfill(8)),
                                  generated['_inputs'], generated, kp_size)
                epoch += 1
                batch_in_epoch = 0
                if (epoch % freq == 0) or epoch == num_epochs or stop_now:
                    self.save(epoch, 0)
                if stop_now:
                    interrupted = stop.signum is not None
                    break
        return epoch, history, interrupted

    def _progress(self, epoch: int, num_epochs: int, total: int, initial: int):
        if not (self.is_main and self.opts.progress):
            return None
        from tqdm import tqdm
        return tqdm(total=total, initial=initial, desc=f'epoch {epoch + 1}/{num_epochs}', leave=True,
                    mininterval=1.0, dynamic_ncols=True)


def train(opts: TrainOptions) -> TrainResult:
    """Build a Trainer and run it."""
    return Trainer(opts).run()


__all__ = ['TrainOptions', 'TrainResult', 'Trainer', 'TrainingError', 'train', 'lr_at', 'run_checkpoints']
