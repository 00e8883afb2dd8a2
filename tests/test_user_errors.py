"""Issue 12: what a hostile but fair new user ran into, checked the way that user sees it.

Each case runs ``python -m fomm_model ...`` (or ``fomm_model.cli.main`` for variants of a case already run as
a subprocess): exit code, the message, no traceback, and files that must survive compared by checksum.
"""
from __future__ import annotations

import copy
import hashlib
import os
import resource
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from helpers import EINSTEIN as AVATAR
from helpers import REPO, TINY_CONFIG, fomm, make_checkpoint, make_clip
from test_training_loop import tiny_config

from fomm_model.checkpoint import read_checkpoint
from fomm_model.cli import main
from fomm_model.config import ConfigError, load_config
from fomm_model.output_paths import temp_files
from fomm_model.training.synthetic import make_dataset
from fomm_model.training.trainer import Trainer, TrainingError, TrainOptions, train

torch.set_num_threads(1)


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def refused(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """A clean refusal: exit code 2, no traceback, every needle in the message; returns stderr."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert 'Traceback' not in proc.stderr, proc.stderr[-3000:]
    for needle in needles:
        assert needle in proc.stderr, (needle, proc.stderr[-3000:])
    return proc.stderr


def cli(capsys, *args) -> tuple[int, str]:
    """``fomm ARGS`` in this process: (exit code, stderr)."""
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


@pytest.fixture(scope='module')
def ckpts(tmp_path_factory):
    d = tmp_path_factory.mktemp('ckpts')
    return {'tiny': make_checkpoint(d / 'tiny.pth.tar', TINY_CONFIG, with_discriminator=True),
            'face': make_checkpoint(d / 'face-128.pth.tar', 'face-128', with_discriminator=True)}


@pytest.fixture(scope='module')
def driving(tmp_path_factory):
    return make_clip(tmp_path_factory.mktemp('clip') / 'driving.mp4', frames=4)


@pytest.fixture
def animate_args(ckpts, driving):
    def args(result, *extra, source=AVATAR):
        return ['animate', '--config', TINY_CONFIG, '--checkpoint', ckpts['tiny'], '--source_image', source,
                '--driving_video', driving, '--result_video', result, '--cpu', *extra]
    return args


@pytest.fixture(scope='module')
def training(tmp_path_factory):
    """A tiny training config (no perceptual net: fast) as a YAML file, and a finished 2-step run."""
    root = tmp_path_factory.mktemp('train')
    data = make_dataset(root / 'data', identities=3, clips_per_identity=1, num_frames=6)
    config = tiny_config(data, num_epochs=1, num_repeats=2)  # one epoch of 3 steps
    config['train_params']['loss_weights']['perceptual'] = [0, 0, 0, 0, 0]
    path = root / 'tiny-train.yaml'
    path.write_text(yaml.safe_dump(config))
    result = train(TrainOptions(config=copy.deepcopy(config), log_dir=root / 'run', max_steps=2, tensorboard=False,
                                progress=False))
    assert result.step == 2
    return {'config': path, 'dict': config, 'run': root / 'run', 'checkpoint': result.checkpoint}


def train_args(training, log_dir, *extra):
    return ['train', '--config', training['config'], '--log_dir', log_dir, '--threads', '1', '--no_tensorboard',
            '--no_progress', *extra]


# ----- 1. a run never overwrites another run's checkpoints -----

def test_train_refuses_a_log_dir_holding_another_runs_checkpoints(training, tmp_path):
    newest = training['checkpoint']
    before = sha(newest)
    proc = fomm(*train_args(training, training['run'], '--max_steps', '1'), timeout=300)
    refused(proc, str(newest), f'--checkpoint {newest}', '--overwrite', 'another --log_dir')
    assert sha(newest) == before
    # a warm start (--init_from) into that folder is a new run too
    with pytest.raises(TrainingError, match='--init_from there would overwrite'):
        Trainer(TrainOptions(config=copy.deepcopy(training['dict']), log_dir=training['run'], init_from=newest,
                             tensorboard=False, progress=False))
    assert sha(newest) == before


def test_train_overwrite_starts_over_and_deletes_the_old_run(training, tmp_path, capsys, caplog):
    run = tmp_path / 'run'
    run.mkdir()
    for f in training['run'].iterdir():
        if f.is_file():
            (run / f.name).write_bytes(f.read_bytes())
    (run / 'log.txt').write_text('00000000) l1 - 1.00000\n')
    (run / '00000007-checkpoint.pth.tar').write_bytes(training['checkpoint'].read_bytes())
    code, err = cli(capsys, *train_args(training, run, '--max_steps', '1', '--overwrite'))
    assert code == 0, err
    assert '--overwrite: deleted the previous run' in caplog.text and '2 checkpoint(s)' in caplog.text
    assert [p.name for p in run.glob('*-checkpoint.pth.tar')] == ['00000000-checkpoint.pth.tar']
    assert read_checkpoint(run / '00000000-checkpoint.pth.tar')['step'] == 1  # the new run's, not the old one's
    assert not (run / 'log.txt').exists()  # the old run's loss log is gone, not appended to


def test_resuming_this_folders_checkpoint_is_allowed_but_not_with_overwrite(training, tmp_path):
    with pytest.raises(TrainingError, match='--overwrite would delete'):
        Trainer(TrainOptions(config=copy.deepcopy(training['dict']), log_dir=training['run'], overwrite=True,
                             checkpoint=training['checkpoint'], tensorboard=False, progress=False))
    trainer = Trainer(TrainOptions(config=copy.deepcopy(training['dict']), log_dir=training['run'],
                                   checkpoint=training['checkpoint'], tensorboard=False, progress=False))
    assert trainer.step == 2


# ----- 2. an output that is an input is refused before anything is written -----

def test_animate_refuses_to_write_over_its_inputs(animate_args, driving, tmp_path, capsys):
    before = sha(driving)
    proc = fomm(*animate_args(driving))
    refused(proc, '--result_video', 'is the same file as --driving_video', 'Choose another --result_video')
    assert sha(driving) == before
    # the same file under another name: a symlink and a hard link
    (tmp_path / 'link.mp4').symlink_to(driving)
    os.link(driving, tmp_path / 'hard.mp4')
    for alias in ('link.mp4', 'hard.mp4'):
        code, err = cli(capsys, *animate_args(tmp_path / alias))
        assert code == 2 and 'is the same file as --driving_video' in err, err
    source = tmp_path / 'me.png'
    source.write_bytes(AVATAR.read_bytes())
    code, err = cli(capsys, *animate_args(source, source=source))
    assert code == 2 and 'is the same file as --source_image' in err, err
    assert sha(driving) == before and sha(source) == sha(AVATAR)
    assert not temp_files(driving.parent) and not temp_files(tmp_path)


def test_reconstruct_refuses_out_folder_holding_its_inputs(ckpts, tmp_path, capsys):
    data = tmp_path / 'data'
    data.mkdir()
    clip = make_clip(data / 'clip.mp4', frames=3)
    before = sha(clip)
    code, err = cli(capsys, 'reconstruct', '--config', TINY_CONFIG, '--checkpoint', ckpts['tiny'], '--data', data,
                    '--out', data, '--cpu')
    assert code == 2 and 'is the same file as input video' in err and 'Choose another --out' in err, err
    assert sha(clip) == before
    code, err = cli(capsys, 'reconstruct', '--config', TINY_CONFIG, '--checkpoint', ckpts['tiny'], '--data', data,
                    '--json', clip, '--cpu')
    assert code == 2 and '--json' in err and 'is the same file as input video' in err, err
    assert sha(clip) == before


# ----- 3. bad output paths: checked before the work, or a clean stop that keeps the old file -----

def test_animate_bad_result_paths_are_refused_before_any_work(animate_args, tmp_path, capsys):
    proc = fomm(*animate_args(tmp_path / 'x.png'))
    refused(proc, "cannot write '.png' files", '.mp4, .mov, .mkv, .m4v, .avi, .gif')
    (tmp_path / 'afile').write_text('not a folder')
    unwritable = _unwritable_folder(tmp_path)
    cases = {tmp_path / 'x.txt': "cannot write '.txt' files",
             tmp_path: 'is a folder; give a file name',
             tmp_path / 'afile' / 'out.mp4': 'is a file',
             unwritable / 'out.mp4': 'cannot write into folder'}
    for path, message in cases.items():
        code, err = cli(capsys, *animate_args(path))
        assert code == 2 and message in err and str(path) in err, (path, err)
    code, err = cli(capsys, *animate_args(tmp_path / 'r.gif', '--audio'))
    assert code == 2 and 'cannot carry sound' in err, err
    assert (tmp_path / 'afile').read_text() == 'not a folder'
    assert {p.name for p in tmp_path.iterdir()} <= {'afile', 'readonly'}  # nothing written, no temporary files


def _unwritable_folder(tmp_path: Path) -> Path:
    if os.geteuid() != 0:
        folder = tmp_path / 'readonly'
        folder.mkdir()
        folder.chmod(0o555)
        return folder
    if not Path('/proc').is_dir():
        pytest.skip('running as root without /proc: no folder here is unwritable')
    return Path('/proc')  # root may write anywhere else


def test_animate_encoder_dying_mid_run_keeps_the_old_result(animate_args, tmp_path):
    """ffmpeg killed by the file-size limit while writing: a clear error, the old result untouched."""
    result = tmp_path / 'result.mp4'
    result.write_bytes(b'the result of yesterday' * 100)
    before = sha(result)

    def limit_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))

    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    proc = subprocess.run([sys.executable, '-m', 'fomm_model', *map(str, animate_args(result))], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300, preexec_fn=limit_file_size)
    refused(proc, f'could not write video {result}', 'ffmpeg encoder', 'unchanged')
    assert sha(result) == before
    assert [p.name for p in tmp_path.iterdir()] == ['result.mp4']  # no temporary file left either


def test_crop_output_that_is_a_file_is_refused_first(driving, tmp_path, capsys):
    target = tmp_path / 'crops'
    target.write_text('keep me')
    code, err = cli(capsys, 'crop', '--input', driving, '--output', target)
    assert code == 2 and f'--output {target} is a file, not a folder' in err, err
    assert target.read_text() == 'keep me'


# ----- 4. malformed configs and checkpoints of another config: messages, not tracebacks -----

BAD_YAML = textwrap.dedent('''\
    model_params:
      common_params:
        num_kp: 10
       kp_detector_params: {temperature: 0.1
    ''')


def test_malformed_yaml_config_names_file_and_line(animate_args, tmp_path, capsys):
    bad = tmp_path / 'bad.yaml'
    bad.write_text(BAD_YAML)
    with pytest.raises(ConfigError) as err:
        load_config(bad)
    assert err.value.line == 4 and f'{bad}, line 4' in str(err.value)
    args = animate_args(tmp_path / 'r.mp4')
    args[args.index('--config') + 1] = bad
    refused(fomm(*args), f'{bad}, line 4', 'not valid YAML')
    code, err = cli(capsys, 'train', '--config', bad, '--log_dir', tmp_path / 'run')
    assert code == 2 and f'{bad}, line 4' in err and 'not valid YAML' in err, err
    assert not (tmp_path / 'r.mp4').exists() and not (tmp_path / 'run').exists()


def test_train_resume_from_another_configs_checkpoint(training, ckpts, tmp_path):
    proc = fomm(*train_args(training, tmp_path / 'run', '--checkpoint', ckpts['face'], '--max_steps', '1'),
                timeout=300)
    err = refused(proc, f"checkpoint {ckpts['face']} does not fit config {training['config']}",
                  'fits the shipped config(s): face-128')
    assert len(err.strip().splitlines()) < 5, err
    assert not list((tmp_path / 'run').glob('*-checkpoint.pth.tar'))


# ----- 5. resuming a run at --max_steps trains nothing, and says so -----

def test_resume_at_max_steps_trains_nothing(training, tmp_path):
    ckpt = training['checkpoint']
    before = sha(ckpt)
    files = sorted(p.name for p in training['run'].iterdir())
    proc = fomm(*train_args(training, training['run'], '--checkpoint', ckpt, '--max_steps', '2'), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'is at step 2 and --max_steps is 2: nothing to train; raise --max_steps' in proc.stderr
    assert proc.stdout.startswith('step 2,')
    assert sha(ckpt) == before and sorted(p.name for p in training['run'].iterdir()) == files


# ----- 6. a checkpoint save killed with kill -9 leaves a temporary file: the next start removes it -----

KILLED_SAVE = textwrap.dedent('''\
    import sys, time
    from fomm_model.checkpoint import atomic_save

    class Slow:  # pickling it takes long: the save is under way when the kill comes
        def __reduce__(self):
            print('saving', flush=True)
            time.sleep(600)
            return (int, ())

    atomic_save({'generator': {}, 'kp_detector': {}, 'slow': Slow()}, sys.argv[1])
    ''')


def test_orphan_of_a_killed_save_is_removed_on_the_next_start(training, tmp_path):
    run = tmp_path / 'run'
    proc = subprocess.Popen([sys.executable, '-c', KILLED_SAVE, str(run / '00000000-checkpoint.pth.tar')], cwd=REPO,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == 'saving'
    proc.kill()  # SIGKILL: no cleanup runs
    proc.wait()
    proc.stdout.close()
    orphans = temp_files(run)
    assert len(orphans) == 1 and not list(run.glob('*-checkpoint.pth.tar'))
    # a temporary file whose writer still runs (this test) is left alone
    alive = run / f'.00000001-checkpoint.pth.tar.fomm-tmp-{os.getpid()}-abcdefgh.tar'
    alive.write_bytes(b'still being written')
    started = fomm(*train_args(training, run, '--max_steps', '1'), timeout=300)
    assert started.returncode == 0, started.stderr[-3000:]
    assert f'removed {orphans[0]}' in started.stderr and f'left by process {proc.pid}' in started.stderr
    assert temp_files(run) == [alive]


# ----- 7. a checkpoint carrying code is refused as unsafe, never run, never "load it with weights_only=False" -----

class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}',))


def test_checkpoint_with_code_is_refused_as_unsafe(animate_args, ckpts, tmp_path):
    marker = tmp_path / 'code-ran'
    evil = tmp_path / 'evil.pth.tar'
    ckpt = torch.load(ckpts['tiny'], weights_only=True)
    ckpt['epoch'] = _Payload(marker)
    torch.save(ckpt, evil)
    args = animate_args(tmp_path / 'r.mp4')
    args[args.index('--checkpoint') + 1] = evil
    err = refused(fomm(*args), f'refused to load checkpoint {evil} as unsafe', 'Python objects or code',
                  'never needs')
    assert 'weights_only' not in err and 'truncated' not in err and 'corrupt' not in err
    assert not marker.exists()  # the payload never ran


def test_only_our_temporary_files_of_dead_writers_are_removed(tmp_path, caplog):
    from fomm_model.output_paths import atomic_write_bytes
    dead = subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'], capture_output=True,
                          text=True).stdout.strip()
    names = {f'.a.mp4.fomm-tmp-{dead}-x1y2z3w4.mp4': False,  # ours, writer gone: removed
             f'.b.pth.tar.fomm-tmp-{os.getpid()}-abcdefgh.tar': True,  # ours, writer alive: kept
             f'c.pth.tar.{dead}.tmp': True, f'.d.fomm-tmp-{dead}.mp4': True, 'e.mp4': True}  # not ours: kept
    for name in names:
        (tmp_path / name).write_bytes(b'x')
    atomic_write_bytes(b'result', tmp_path / 'f.json')
    long_name = 'n' * 250 + '.json'  # its temporary name must still fit the file system's limit
    atomic_write_bytes(b'result', tmp_path / long_name)
    assert {p.name for p in tmp_path.iterdir()} == {n for n, kept in names.items() if kept} | {'f.json', long_name}
    assert f'left by process {dead}' in caplog.text


def test_release_refuses_to_write_over_its_training_checkpoint(ckpts, tmp_path, capsys):
    from fomm_model.training.release import main as release_main
    src = tmp_path / 'train.pth.tar'
    src.write_bytes(Path(ckpts['tiny']).read_bytes())
    before = sha(src)
    assert release_main([str(src), str(src)]) == 2
    assert 'same file as training checkpoint' in capsys.readouterr().err
    assert sha(src) == before
    assert release_main([str(src), str(tmp_path)]) == 2 and 'is a folder' in capsys.readouterr().err
    assert release_main([str(src), str(tmp_path / 'small.pth.tar')]) == 0
    assert (tmp_path / 'small.pth.tar').stat().st_size < src.stat().st_size
