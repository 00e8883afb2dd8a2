"""Runners (ONNX Runtime, OpenVINO) agree with eager float32 on real weights and faces; ``auto`` picks among what
is installed and says why; the thread policy decides from frame times and applies its decisions."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import load_bundled, skip_unless_installed

from fomm_model import Animator, load_checkpoint, load_config
from fomm_model.devices import cpu_has_fast_bfloat16
from fomm_model.inference import RunnerError, create_runner, select
from fomm_model.inference.threads import (
    AdaptiveThreads,
    ThreadPolicy,
    free_cores,
    initial_threads,
    omp_wait_env,
    threads_for,
    usable_cpus,
)
from fomm_model.inference.torch_runner import TorchRunner
from fomm_model.inference.verify import time_interleaved
from fomm_model.video_io import read_image, read_video, resize_image

RUNTIMES = ['onnx', 'openvino']


@pytest.fixture(scope='module', autouse=True)
def two_threads_and_a_private_cache(tmp_path_factory):
    """2 threads (the issue's setting) and exported/compiled graphs in a temporary cache, not the user's."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv('FOMM_LIVE_CACHE', str(tmp_path_factory.mktemp('fomm-live-cache')))
        yield
    torch.set_num_threads(before)


@pytest.fixture(scope='module')
def tiny(reference_dir):
    models = load_checkpoint(load_config(reference_dir / 'tiny-128.yaml'), reference_dir / 'tiny-128-checkpoint.pth.tar')
    inputs = np.load(reference_dir / 'inputs.npz')
    to_uint8 = lambda x: (x.transpose(1, 2, 0) * 255 + 0.5).astype(np.uint8)
    return models, to_uint8(inputs['source'][0]), [to_uint8(f) for f in inputs['driving']]


@pytest.fixture(scope='module')
def bundled(shared_dir):
    """The bundled model, a real portrait and real frames of a held-out talking-head clip."""
    models = load_bundled()
    avatar = resize_image(read_image(shared_dir / 'data' / 'avatars' / 'mona_lisa.png'), (128, 128))
    clip = sorted((shared_dir / 'data' / 'faces' / 'test').glob('*.mp4'))[0]
    frames, _ = read_video(clip, max_frames=24)
    return models, avatar, [resize_image(f, (128, 128)) for f in frames[::4]]


def _animate(animator: Animator, source, frames) -> tuple[list[np.ndarray], list[torch.Tensor], list[np.ndarray]]:
    """Keypoints (from uint8 frames: the per-frame path), float frames (predict) and uint8 frames (generate)."""
    animator.set_source(source)
    animator.set_anchor(frames[0])
    kps, preds, images = [], [], []
    for frame in frames:
        kp = animator.keypoints(frame)
        kps.append(np.concatenate([kp.value.ravel(), kp.jacobian.ravel()]))
        preds.append(animator.predict(animator.normalize(kp)).float().clone())
        images.append(animator.generate(animator.normalize(kp)))
    return kps, preds, images


def _assert_agrees(models, source, frames, runner) -> None:
    reference = Animator(models, backend=TorchRunner(models, rewrite=False))   # the unchanged model
    ref_kp, ref_pred, ref_images = _animate(reference, source, frames)
    got_kp, got_pred, got_images = _animate(Animator(models, backend=runner), source, frames)
    kp_diff = max(float(np.abs(a - b).max()) for a, b in zip(got_kp, ref_kp))
    out_diff = max(float((a - b).abs().max()) for a, b in zip(got_pred, ref_pred))
    assert kp_diff < 1e-4, kp_diff
    assert out_diff < 1e-4, out_diff   # float32 runtimes: same maths, other kernels
    for got, want in zip(got_images, ref_images):   # a 1e-4 difference may round to the next level
        assert got.shape == want.shape and got.dtype == np.uint8
        assert np.abs(got.astype(int) - want.astype(int)).max() <= 1


@pytest.mark.parametrize('backend', RUNTIMES)
@pytest.mark.parametrize('model', ['tiny', 'bundled'])
def test_runtime_agrees_with_eager_float32(backend, model, request):
    skip_unless_installed(backend)
    models, source, frames = request.getfixturevalue(model)
    selection = create_runner(models, (128, 128), backend, 'cpu')
    assert selection.runner.name == backend
    assert selection.verification['output_max_abs_diff'] <= 1 / 255
    _assert_agrees(models, source, frames, selection.runner)


def test_runner_image_calls_are_the_tensor_calls_with_the_shared_conversions(tiny):
    """The default per-frame calls of every runner: exactly :mod:`convert` around the tensor calls."""
    from fomm_model.inference.convert import image_to_tensor, tensor_to_image
    models, source, frames = tiny
    runner = TorchRunner(models)
    assert not runner.images_in_graph
    prepared = runner.prepare_source(image_to_tensor(source, (128, 128)))
    value, jacobian = runner.keypoints_of_image(frames[2])
    want_value, want_jacobian = runner.keypoints(image_to_tensor(frames[2], (128, 128)))
    assert torch.equal(value, want_value) and torch.equal(jacobian, want_jacobian)
    assert np.array_equal(runner.generate_image(prepared, value, jacobian),
                          tensor_to_image(runner.generate(prepared, value, jacobian)))


@pytest.mark.parametrize('model', ['tiny', 'bundled'])
def test_openvino_converts_frames_inside_its_graphs_as_numpy_would(model, request):
    """float32 OpenVINO takes the uint8 frame and returns it from its graphs; the result is the tensor path's."""
    skip_unless_installed('openvino')
    from fomm_model.inference.convert import image_to_tensor, tensor_to_image
    models, source, frames = request.getfixturevalue(model)
    runner = create_runner(models, (128, 128), 'openvino', 'cpu', verify=False).runner
    assert runner.images_in_graph
    prepared = runner.prepare_source(image_to_tensor(source, (128, 128)))
    for frame in frames[1:4]:
        value, jacobian = runner.keypoints_of_image(frame)
        want_value, want_jacobian = runner.keypoints(image_to_tensor(frame, (128, 128)))
        torch.testing.assert_close(value, want_value, atol=1e-6, rtol=0)
        torch.testing.assert_close(jacobian, want_jacobian, atol=1e-6, rtol=0)
        image = runner.generate_image(prepared, value, jacobian)
        assert image.shape == (128, 128, 3) and image.dtype == np.uint8 and image.flags['C_CONTIGUOUS']
        want = tensor_to_image(runner.generate(prepared, value, jacobian))
        assert np.abs(image.astype(int) - want.astype(int)).max() <= 1
        assert np.mean(image != want) < 1e-3     # off by one only where fused kernels round a tie apart
        before = image.copy()
        runner.generate_image(prepared, *runner.keypoints_of_image(frames[0]))
        assert np.array_equal(image, before)     # a frame handed out is the caller's: the next call keeps off it


def test_openvino_writes_its_frame_graphs_once_and_compiles_float_keypoints_only_when_asked(tiny):
    """The uint8 graphs are IR files beside the export (OpenVINO's disk cache then serves each thread count),
    written by the first runner and reused; a thread count compiles only what frames need."""
    skip_unless_installed('openvino')
    from fomm_model.inference.convert import image_to_tensor
    models, _, frames = tiny
    runner = create_runner(models, (128, 128), 'openvino', 'cpu', verify=False).runner
    files = [runner._graph_files[role] for role in ('generator', 'kp_image')]
    assert all(f.suffix == '.xml' and f.is_file() and f.with_suffix('.bin').is_file() for f in files)
    assert not list(files[0].parent.glob('*.tmp.*'))
    stamps = [f.stat().st_mtime_ns for f in files]
    assert set(runner._requests[runner.threads]) == {'kp_image', 'generator'}
    create_runner(models, (128, 128), 'openvino', 'cpu', verify=False)
    assert [f.stat().st_mtime_ns for f in files] == stamps
    runner.keypoints(image_to_tensor(frames[0], (128, 128)))
    assert set(runner._requests[runner.threads]) == {'kp', 'kp_image', 'generator'}


@pytest.mark.parametrize('backend', RUNTIMES)
def test_runtime_thread_count_can_change_and_results_do_not(backend, tiny):
    skip_unless_installed(backend)
    models, source, frames = tiny
    runner = create_runner(models, (128, 128), backend, 'cpu', verify=False).runner
    assert runner.threads == torch.get_num_threads() == 2
    animator = Animator(models, backend=runner)
    animator.set_source(source)
    animator.set_anchor(frames[0])
    before = animator.predict(animator.normalize(animator.keypoints(frames[3]))).clone()
    runner.set_threads(1)
    assert runner.threads == 1 and '1 threads' in runner.describe()
    after = animator.predict(animator.normalize(animator.keypoints(frames[3])))
    torch.testing.assert_close(after, before, atol=1e-5, rtol=0)


def test_openvino_refuses_bfloat16_without_fast_bfloat16(tiny):
    skip_unless_installed('openvino')
    if cpu_has_fast_bfloat16():
        pytest.skip('this CPU has fast bfloat16')
    with pytest.raises(RunnerError, match='AVX512-BF16'):
        create_runner(tiny[0], (128, 128), 'openvino', 'cpu', dtype='bfloat16')


@pytest.mark.parametrize('how', ['import openvino', 'the openvino runner'])
def test_openvino_sends_no_telemetry_through_the_runner(tmp_path, how):
    """A plain ``import openvino`` reports to Google Analytics and writes ~/intel (the contrast: so the check below
    can fail); the runner's import binds OpenVINO's no-op stub and writes nothing."""
    skip_unless_installed('openvino')
    code = ('import openvino' if how == 'import openvino' else
            'from fomm_model.inference.openvino_runner import _import_openvino; _import_openvino()')
    code += ('\nimport sys, openvino.tools.ovc.telemetry_utils as t\n'
             'print(t.tm.__name__, "openvino_telemetry" in sys.modules)')
    env = {k: v for k, v in os.environ.items() if k not in ('CI', 'TF_BUILD', 'JENKINS_URL')}  # its CI opt-outs
    env['HOME'] = str(tmp_path)
    out = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    module, loaded = out.stdout.split()
    if how == 'import openvino':
        assert module == 'openvino_telemetry' and loaded == 'True' and (tmp_path / 'intel').is_dir()
    else:
        assert module == 'openvino.tools.ovc.telemetry_stub' and loaded == 'False'
        assert not (tmp_path / 'intel').exists()


def test_auto_picks_among_installed_runtimes_and_says_why(tiny):
    models = tiny[0]
    selection = create_runner(models, (128, 128), 'auto', 'cpu')
    offered, skipped = select.candidates(torch.device('cpu'))
    labels = {select.label(*c) for c in offered}
    # every installed candidate was built, verified and timed, or is named as rejected with the reason
    rejected = {lab for lab in labels - set(selection.timings_ms) if f'{lab}: ' in selection.reason.split('rejected: ')[-1]}
    assert set(selection.timings_ms) | rejected == labels and selection.timings_ms
    chosen = select.label(selection.runner.name, selection.runner.dtype, selection.runner.channels_last)
    assert selection.timings_ms[chosen] == min(selection.timings_ms.values())
    assert selection.reason.startswith(f'auto: {chosen} fastest on cpu')
    for other in labels - {chosen}:
        assert other in selection.reason
    for why in skipped:
        assert why in selection.reason
    assert all(ms > 0 for ms in selection.timings_ms.values())


def test_auto_never_offers_bfloat16_on_a_cpu_without_fast_bfloat16(monkeypatch):
    cpu = torch.device('cpu')
    offered, skipped = select.candidates(cpu)
    if not cpu_has_fast_bfloat16():
        assert all(dtype == torch.float32 for _, dtype, _ in offered)
        assert any('bfloat16' in why and 'AVX512-BF16' in why for why in skipped)
    monkeypatch.setattr(select, 'cpu_has_fast_bfloat16', lambda: True)
    assert ('torch', torch.bfloat16, True) in select.candidates(cpu)[0]
    monkeypatch.setattr(select, 'cpu_has_fast_bfloat16', lambda: False)
    assert all(dtype == torch.float32 for _, dtype, _ in select.candidates(cpu)[0])


def test_auto_takes_reduced_precision_only_within_two_percent_of_float32(tiny, monkeypatch):
    """A bfloat16 candidate nobody asked for is used only if its start-up check is within AUTO_MAX_OUTPUT_DIFF
    of float32; an explicit --dtype bfloat16 is still taken (the looser sanity tolerance applies)."""
    f32, bf16 = ('torch', torch.float32, False), ('torch', torch.bfloat16, True)
    monkeypatch.setattr(select, 'candidates', lambda device: ([f32, bf16], []))
    monkeypatch.setattr(select, 'AUTO_MAX_OUTPUT_DIFF', 1.0)        # any difference accepted: both are timed
    assert set(create_runner(tiny[0], (128, 128), 'auto', 'cpu').timings_ms) == {select.label(*f32), select.label(*bf16)}
    monkeypatch.setattr(select, 'AUTO_MAX_OUTPUT_DIFF', 0.0)        # bfloat16 always differs a little: refused
    selection = create_runner(tiny[0], (128, 128), 'auto', 'cpu')
    assert selection.runner.dtype == torch.float32 and set(selection.timings_ms) == {select.label(*f32)}
    assert 'rejected: torch bfloat16+channels_last: output differs from float32 by' in selection.reason
    assert '--dtype bfloat16 to use it' in selection.reason
    assert create_runner(tiny[0], (128, 128), 'auto', 'cpu', dtype='bfloat16').runner.dtype == torch.bfloat16


def test_asking_for_bfloat16_on_a_cpu_without_fast_bfloat16_says_it_is_slow(tiny, monkeypatch):
    monkeypatch.setattr(select, 'cpu_has_fast_bfloat16', lambda: False)
    selection = create_runner(tiny[0], (128, 128), 'torch', 'cpu', dtype='bfloat16')
    assert selection.runner.dtype == torch.bfloat16   # what was asked for, with the warning in the reason
    assert 'no AVX512-BF16/AMX' in selection.reason and '--dtype float32' in selection.reason
    monkeypatch.setattr(select, 'cpu_has_fast_bfloat16', lambda: True)
    assert 'AVX512-BF16' not in create_runner(tiny[0], (128, 128), 'torch', 'cpu', dtype='bfloat16').reason


@pytest.mark.parametrize('backend,module,hint', [('openvino', 'openvino', 'pip install openvino'),
                                                 ('onnx', 'onnxruntime', 'pip install onnxruntime')])
def test_missing_runtime_is_a_clear_error_and_auto_says_it_was_not_tried(tiny, monkeypatch, backend, module,
                                                                         hint):
    monkeypatch.setitem(sys.modules, module, None)   # what Python does for a package that is not installed
    with pytest.raises(RunnerError, match=hint):
        create_runner(tiny[0], (128, 128), backend, 'cpu')
    offered, skipped = select.candidates(torch.device('cpu'))
    assert backend not in {name for name, _, _ in offered}
    assert f'{backend}: {module} is not installed ({hint})' in skipped


def test_interleaved_probe_times_every_runner(tiny):
    models = tiny[0]
    runners = {'fp32': create_runner(models, (128, 128), 'torch', 'cpu').runner,
               'fp32+cl': create_runner(models, (128, 128), 'torch', 'cpu', channels_last=True).runner}
    timings = time_interleaved(runners, (128, 128), rounds=3, warmup=1)
    assert set(timings) == set(runners) and all(ms > 0 for ms in timings.values())


# -- thread policy ---------------------------------------------------------------------------------------------

def _feed(logic: AdaptiveThreads, ms_by_threads: dict[int, float], frames: int) -> list:
    """Frames whose time depends on the thread count in use (the trial's count while one runs)."""
    decisions = []
    for _ in range(frames):
        decision = logic.record(ms_by_threads[logic.trying or logic.threads])
        if decision is not None:
            decisions.append(decision)
    return decisions


def test_adaptive_threads_fall_back_when_a_core_is_taken_and_return_when_it_is_free():
    logic = AdaptiveThreads(threads=2, max_threads=2, window=10, settle=2, retry_after=100)
    assert _feed(logic, {2: 20.0, 1: 34.0}, 60) == []                  # idle: 2 threads, nothing to do
    contended = {2: 45.0, 1: 34.0}                                     # a competitor takes a core
    first = _feed(logic, contended, 30)
    assert [d.threads for d in first] == [1, 1]                        # try 1, keep 1
    assert 'another process' in first[0].reason and 'keeping 1' in first[1].reason
    assert logic.threads == 1
    retries = _feed(logic, contended, 1000)                            # tries 2 now and then, backing off
    assert [d.threads for d in retries] == [2, 1] * (len(retries) // 2) and len(retries) >= 4
    assert 'back to 1' in retries[1].reason
    gaps = [b.frame - a.frame for a, b in zip(retries[1::2], retries[2::2])]
    assert gaps == sorted(gaps) and gaps[-1] > gaps[0]                 # waits grow after each lost trial
    freed = _feed(logic, {2: 20.0, 1: 34.0}, 2400)                     # the competitor stops
    assert freed[-1].threads == 2 and logic.threads == 2 and 'keeping 2' in freed[-1].reason


def test_adaptive_threads_keep_the_count_when_fewer_threads_do_not_help():
    logic = AdaptiveThreads(threads=2, max_threads=2, window=10, settle=2, retry_after=100)
    _feed(logic, {2: 20.0, 1: 34.0}, 30)
    decisions = _feed(logic, {2: 30.0, 1: 40.0}, 40)    # slower, but 1 thread is slower still
    assert [d.threads for d in decisions] == [1, 2]
    assert 'back to 2' in decisions[1].reason and logic.threads == 2
    assert _feed(logic, {2: 30.0, 1: 40.0}, 10) == []   # and it waits before trying again


def test_thread_counts_from_free_cores():
    assert threads_for(1.0, 2) == 1 and threads_for(1.6, 2) == 2 and threads_for(0.1, 2) == 1
    assert threads_for(3.9, 2) == 2 and threads_for(3.9, 8) == 4
    free = free_cores(0.2)
    assert 0.0 <= free <= len(usable_cpus())
    decision = initial_threads(2, 0.2)
    assert 1 <= decision.threads <= 2 and 'free' in decision.reason


def test_policy_applies_to_torch_and_to_runtimes_with_their_own_threads(tiny):
    models, source, frames = tiny
    before = torch.get_num_threads()
    try:
        torch_runner = create_runner(models, (128, 128), 'torch', 'cpu').runner
        ThreadPolicy(torch_runner, threads=1).start()
        assert torch.get_num_threads() == 1
        policy = ThreadPolicy(torch_runner, max_threads=2, window_s=0.1, window=3, settle=0)
        first = policy.start()
        assert torch.get_num_threads() == first.threads
        for _ in range(3):
            policy.record(10.0)
        assert torch.get_num_threads() == policy.threads
        for backend in RUNTIMES:
            if select.installed(backend):
                continue
            torch.set_num_threads(2)
            runner = create_runner(models, (128, 128), backend, 'cpu', verify=False).runner
            ThreadPolicy(runner, threads=1).start()
            assert runner.threads == 1 and torch.get_num_threads() == 1   # torch only converts images then
            _assert_agrees(models, source, frames[:3], runner)
    finally:
        torch.set_num_threads(before)


def test_short_spin_waiting_reaches_openmp(monkeypatch):
    """The environment from omp_wait_env reaches PyTorch's OpenMP runtime (a short spin, then sleep)."""
    env = {k: v for k, v in os.environ.items() if k not in ('OMP_WAIT_POLICY', 'GOMP_SPINCOUNT', 'KMP_BLOCKTIME')}
    assert omp_wait_env(env) is True
    env['OMP_DISPLAY_ENV'] = 'VERBOSE'
    out = subprocess.run([sys.executable, '-c', 'import torch; torch.ones(1 << 20).sum()'], env=env, check=False,
                         capture_output=True, text=True, timeout=120)
    assert "GOMP_SPINCOUNT = '10000'" in out.stderr
    for key in ('GOMP_SPINCOUNT', 'KMP_BLOCKTIME'):
        monkeypatch.setenv(key, os.environ.get(key, 'unset'))   # restored after the test
    assert omp_wait_env() is False   # too late here: torch is imported (and the caller is told)


def test_a_onednn_isa_cap_below_bf16_means_no_fast_bfloat16(monkeypatch):
    """ONEDNN_MAX_CPU_ISA=AVX2 on an AVX512-BF16 machine runs oneDNN as on an AVX2 CPU: bfloat16 is slow."""
    from fomm_model import devices
    monkeypatch.setenv('ONEDNN_MAX_CPU_ISA', 'avx2')
    assert devices.isa_cap() == 'AVX2'
    assert not devices.cpu_has_fast_bfloat16()
    assert 'oneDNN capped at AVX2 by ONEDNN_MAX_CPU_ISA' in devices.describe_cpu()
    monkeypatch.setenv('ONEDNN_MAX_CPU_ISA', 'ALL')
    assert devices.isa_cap() is None
    assert 'capped' not in devices.describe_cpu()
    monkeypatch.delenv('ONEDNN_MAX_CPU_ISA')
    uncapped = devices.cpu_has_fast_bfloat16()
    monkeypatch.setenv('ONEDNN_MAX_CPU_ISA', 'AVX512_CORE_BF16')   # a cap at bfloat16 leaves the CPU's answer
    assert devices.cpu_has_fast_bfloat16() == uncapped
