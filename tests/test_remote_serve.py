"""The model server through real Ray Serve (``python main.py serve`` in a subprocess, on loopback, the bundled
model on the CPU) and real clients: remote equals local, concurrent streams keep their avatars, tokens,
malformed messages, a server killed and restarted. One server for the module (Ray starts in ~30 s here)."""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import AVATAR, EINSTEIN, SHARED, clip_frames

pytest.importorskip('ray.serve', reason='the model server needs the remote extra: pip install -e ".[remote]"')
pytest.importorskip('websockets')

pytestmark = pytest.mark.slow

SIZE = (128, 128)


@pytest.fixture(scope='module')
def token_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp('token') / 'token'
    path.write_text('test-token-' + 'x' * 24 + '\n')
    return path


@pytest.fixture(scope='module')
def server(tmp_path_factory, token_file):
    from live.remote.process import ServeProcess
    srv = ServeProcess(token_file, tmp_path_factory.mktemp('serve'), extra=('--max-batch', '8', '--batch-wait-ms', '5'))
    try:
        srv.start()
    except RuntimeError as exc:
        pytest.fail(str(exc))
    yield srv
    srv.stop()


@pytest.fixture(scope='module')
def local():
    """The bundled model as a local eager float32 animator, and what a remote client needs of it."""
    import torch

    from fomm_model import Animator
    from live.model_files import load_model
    from live.options import ModelOptions
    torch.set_num_threads(1)
    models, key = load_model(ModelOptions())
    return models, key, Animator(models, backend='torch')


def _avatar(path: Path) -> np.ndarray:
    from PIL import Image
    return np.asarray(Image.open(path).convert('RGB').resize(SIZE, Image.LANCZOS)).copy()


def _frames(n: int) -> list[np.ndarray]:
    return [f[::2, ::2].copy() for f in clip_frames(n)]     # the 256 px clip at the model's 128 px


def _remote(server, local, send='keypoints', codec='raw', token=None, direct=True):
    from fomm_model.inference.torch_runner import TorchRunner
    from live.remote.connect import animator_on
    from live.remote.runner import RemoteRunner
    models, key, _ = local
    runner = RemoteRunner(server.url, token or server.token_file.read_text().strip(), send=send, codec=codec,
                          keypoint_runner=TorchRunner(models) if send == 'keypoints' else None, model_key=key,
                          token_source='the test', retry_s=0.5, direct=direct)
    return runner, animator_on(runner, None if send == 'crop' else models)


def _animate_all(animator, avatar, frames) -> list[np.ndarray]:
    animator.set_source(avatar)
    animator.clear_anchor()
    return [animator.animate(f) for f in frames]


def test_the_server_tells_ray_to_send_no_usage_statistics(server):
    """Ray reports usage statistics unless RAY_USAGE_STATS_ENABLED=0. The server sets it (this test's environment
    does not), and Ray's own processes, which it starts, carry it."""
    import psutil
    assert 'RAY_USAGE_STATS_ENABLED' not in os.environ
    settings = []
    for p in server.session_processes():
        try:
            env = p.environ() if p.pid != server.proc.pid else {}
            if 'PATH' in env:  # Ray's agents retitle themselves over their environment block: unreadable
                settings.append((p.name(), env.get('RAY_USAGE_STATS_ENABLED')))
        except psutil.Error:
            pass
    names = {name for name, _ in settings}
    assert {'gcs_server', 'raylet'} <= names and all(value == '0' for _, value in settings), settings


def test_remote_output_equals_local_output(server, local):
    avatar, frames = _avatar(AVATAR), _frames(8)
    expected = _animate_all(local[2], avatar, frames)
    results, statuses = {}, {}
    for send, codec in (('keypoints', 'raw'), ('crop', 'raw'), ('keypoints', 'jpeg')):
        runner, animator = _remote(server, local, send, codec)
        try:
            results[send, codec] = _animate_all(animator, avatar, frames)
            statuses[send, codec] = status = runner.link_status()
        finally:
            runner.close()
        assert status.state == 'connected' and status.frames == len(frames)
        assert status.model_ms > 0 and status.round_trip_ms >= status.server_ms > 0
        assert 'cpu' in status.device
    assert statuses['keypoints', 'raw'].bytes_up < 1024                 # 10 keypoints and jacobians up
    assert statuses['crop', 'raw'].bytes_up > 128 * 128 * 3              # the crop up
    assert statuses['keypoints', 'jpeg'].bytes_down < 128 * 128 * 3 / 4  # a JPEG frame down
    for mode in (('keypoints', 'raw'), ('crop', 'raw')):     # lossless: the very same frames
        for a, b in zip(expected, results[mode]):
            assert np.array_equal(a, b), mode
    # JPEG (quality 90) both ways: the stated tolerance is a mean error under 3 levels of 255, PSNR over 30 dB
    diff = np.stack(expected).astype(float) - np.stack(results['keypoints', 'jpeg'])
    assert np.abs(diff).mean() < 3.0
    assert 10 * np.log10(255 ** 2 / (diff ** 2).mean()) > 30


def test_streams_move_to_their_replica_port_unless_it_cannot_be_reached(server, local, monkeypatch, caplog):
    from urllib.parse import urlsplit

    import live.remote.runner as runner_module
    from live.remote.process import free_port
    avatar, frames = _avatar(AVATAR), _frames(4)
    expected = _animate_all(local[2], avatar, frames)
    routes = {}
    # a port nobody listens on stands for a replica port behind a firewall
    closed = free_port()
    for case in ('direct', 'off', 'unreachable'):
        if case == 'unreachable':
            monkeypatch.setattr(runner_module, 'direct_url', lambda url, port: f'ws://127.0.0.1:{closed}/')
        runner, animator = _remote(server, local, direct=case != 'off')
        try:
            assert all(np.array_equal(a, b) for a, b in zip(expected, _animate_all(animator, avatar, frames)))
            routes[case] = (runner.route, urlsplit(runner._conn.url).port, runner.info.direct_port,
                            runner.link_status().line())
        finally:
            runner.close()
    route, port, offered, line = routes['direct']
    assert 30000 <= offered <= 31000 and port == offered          # Serve's direct ingress range
    assert route == f'direct to replica port {offered}' and route in line
    proxy_port = urlsplit(server.url).port
    assert routes['off'][:2] == ("through Serve's proxy (direct route off)", proxy_port)
    assert routes['unreachable'][:2] == (f"through Serve's proxy (replica port {offered} unreachable)", proxy_port)
    assert 'cannot be reached' in caplog.text


def test_four_concurrent_streams_each_get_their_own_avatar(server, local):
    paths = [AVATAR, EINSTEIN, SHARED / 'data/avatars/girl_with_a_pearl_earring.png',
             SHARED / 'data/avatars/lady_agnew.png']
    avatars, frames = [_avatar(p) for p in paths], _frames(6)
    expected = [_animate_all(local[2], a, frames) for a in avatars]
    outputs: dict[int, list[np.ndarray]] = {}
    batches: dict[int, float] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def stream(i: int) -> None:
        try:
            runner, animator = _remote(server, local)
            try:
                animator.set_source(avatars[i])
                start.wait(30)
                outputs[i] = _animate_all(animator, avatars[i], frames)
                batches[i] = runner.link_status().batch
            finally:
                runner.close()
        except BaseException as exc:  # noqa: BLE001 - re-raised below in the test's thread
            errors.append(exc)
    threads = [threading.Thread(target=stream, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    for i in range(4):
        for out, own in zip(outputs[i], expected[i]):
            assert np.abs(out.astype(int) - own).max() <= 2        # batched: at most a rounding level apart
            for j in range(4):
                if j != i:
                    assert np.abs(out.astype(int) - expected[j][0]).mean() > 15    # not someone else's avatar
    assert max(batches.values()) > 1, batches     # the streams did share generator calls


def test_a_wrong_or_missing_token_is_refused_on_both_sides(server, local):
    from fomm_model.inference import RunnerError
    from live.remote.client import Connection, RefusedError
    with pytest.raises(RunnerError, match='refused: wrong or missing token.*token from the test'):
        _remote(server, local, token='not-the-right-token-at-all')
    with pytest.raises(RefusedError, match='wrong or missing token'):
        Connection(server.url, '')
    deadline = time.monotonic() + 10
    while 'wrong or missing token' not in server.stderr() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert 'wrong or missing token' in server.stderr()


def test_a_malformed_message_closes_that_stream_only(server, local):
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    from live.remote import protocol as P
    token = server.token_file.read_text().strip()
    runner, animator = _remote(server, local)
    frames = _frames(3)
    try:
        animator.set_source(_avatar(AVATAR))
        first = animator.animate(frames[0])
        for bad, code in ((b'\x00\x00\x00\x05{"ty', P.CLOSE_BAD_DATA),
                          (P.encode('frame', 2, arrays={'kp_value': np.zeros((1, 11, 2), np.float32),
                                                        'kp_jacobian': np.zeros((1, 11, 2, 2), np.float32)}),
                           P.CLOSE_BAD_DATA),
                          (b'\x00\x00\x00\x02{}' + bytes(2 * 128 * 128 * 3), P.CLOSE_TOO_BIG)):
            with connect(server.url, compression=None, max_size=None, proxy=None) as ws:
                ws.send(P.encode('hello', 1, protocol=P.PROTOCOL, token=token, codec='raw', client='test'))
                assert P.decode(ws.recv(timeout=10), P.SERVER_MESSAGES, None).type == 'welcome'
                ws.send(bad)
                error = P.decode(ws.recv(timeout=10), P.SERVER_MESSAGES, None)
                assert error.type == 'error' and error.fields['code'] == 'protocol' and error.fields['message']
                with pytest.raises(ConnectionClosed) as closed:
                    ws.recv(timeout=10)
                assert closed.value.rcvd.code == code
            # the good stream goes on, on the same replica, with its avatar
            assert runner.connected
            out = animator.animate(frames[1])
            assert out.shape == (*SIZE, 3) and np.abs(out.astype(int) - first).mean() < 40
    finally:
        runner.close()


def test_window_on_the_server_shows_the_link_and_switches_to_this_computer(server, qtbot, tmp_path):
    pytest.importorskip('pytestqt')
    import live.cv2_compat  # noqa: F401 - cv2 before Qt widgets, as run_gui does
    from live.gui.avatar_library import AvatarLibrary
    from live.gui.launch import create_window, parse_gui_args
    from live.gui.settings_store import SettingsStore
    args = parse_gui_args(['--input', str(clip_path()), '--avatar', str(AVATAR), '--remote', server.url,
                           '--token-file', str(server.token_file), '--remote-codec', 'raw', '--backend', 'torch',
                           '--device', 'cpu'])
    window = create_window(args, store=SettingsStore(tmp_path / 'settings.ini'),
                           library=AvatarLibrary(tmp_path / 'avatars'), camera_lister=lambda: [])
    qtbot.addWidget(window)
    try:
        window.show()
        where = window.model_location
        assert where.where_combo.currentData() == 'server' and where.url_edit.text() == server.url
        qtbot.waitUntil(lambda: window.frames_received >= 3, timeout=90_000)
        qtbot.waitUntil(lambda: 'round trip' in where.message_label.text(), timeout=10_000)
        assert 'cpu' in where.message_label.text() and 'model' in where.message_label.text()
        assert 'remote ws://' in window.status_panel.runtime_label.text()
        where.where_combo.setCurrentIndex(0)                  # "this computer"
        where.where_combo.activated.emit(0)
        qtbot.waitUntil(lambda: window.session.engine.model_options.remote == '', timeout=60_000)
        qtbot.waitUntil(lambda: window.session.engine.stats().remote == '', timeout=30_000)
        start = window.frames_received
        qtbot.waitUntil(lambda: window.frames_received >= start + 3, timeout=60_000)
        assert 'remote' not in window.status_panel.runtime_label.text()
    finally:
        window.close()


def test_headless_run_on_the_server_and_a_refused_token(server, tmp_path):
    import subprocess
    import sys

    from helpers import FACE_CLIP, REPO
    env = {'OMP_NUM_THREADS': '1', 'PATH': '/usr/bin:/bin', 'HOME': str(tmp_path)}
    base = [sys.executable, 'main.py', 'run', '--input', str(FACE_CLIP), '--avatar', str(AVATAR), '--remote',
            server.url, '--max-frames', '8', '--backend', 'torch']
    ok = subprocess.run([*base, '--token-file', str(server.token_file), '--output', str(tmp_path / 'out.mp4')],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert f'remote:     model server {server.url}/ (direct to replica port' in ok.stdout and 'round trip' in ok.stdout
    assert 'output:     ' in ok.stdout and '(8 frames)' in ok.stdout
    bad = tmp_path / 'bad-token'
    bad.write_text('y' * 32)
    refused = subprocess.run([*base, '--token-file', str(bad)], cwd=REPO, env=env, capture_output=True, text=True,
                             timeout=180)
    assert refused.returncode == 2
    assert 'refused: wrong or missing token' in refused.stderr and f'--token-file {bad}' in refused.stderr
    assert 'Traceback' not in refused.stderr


def clip_path() -> Path:
    from helpers import FACE_CLIP
    return FACE_CLIP


def test_a_killed_replica_is_restarted_by_serve_and_its_stream_reconnects(server, local):
    import psutil
    avatar, frames = _avatar(EINSTEIN), _frames(4)
    expected = _animate_all(local[2], avatar, frames)
    runner, animator = _remote(server, local)
    try:
        _animate_all(animator, avatar, frames[:2])
        old = runner.info.replica
        replicas = [p for p in psutil.process_iter(['cmdline'])
                    if os.getsid(p.pid) == server.proc.pid and 'ServeReplica' in ' '.join(p.info['cmdline'] or [])]
        assert len(replicas) == 1
        replicas[0].kill()
        assert np.array_equal(animator.animate(frames[2]), expected[1])     # held
        deadline = time.monotonic() + 90
        while not runner.connected and time.monotonic() < deadline:
            time.sleep(0.25)
        assert runner.connected, runner.link_status().message
        assert runner.info.replica != old                                  # a new replica, started by Serve
        assert np.array_equal(animator.animate(frames[3]), expected[3])
    finally:
        runner.close()


def test_server_killed_then_restarted_the_client_holds_and_recovers(server, local, caplog):
    avatar, frames = _avatar(AVATAR), _frames(4)
    expected = _animate_all(local[2], avatar, frames)
    runner, animator = _remote(server, local)
    try:
        assert np.array_equal(_animate_all(animator, avatar, frames[:2])[-1], expected[1])
        server.kill()
        t0 = time.monotonic()
        held = animator.animate(frames[2])               # no server: the last frame, at once
        noticed = time.monotonic() - t0
        assert noticed < 2.0 and np.array_equal(held, expected[1])
        status = runner.link_status()
        assert status.state == 'reconnecting' and 'reconnecting every' in status.message
        assert any('Not falling back to the local model' in r.getMessage() for r in caplog.records)
        server.start()
        deadline = time.monotonic() + 60
        while not runner.connected and time.monotonic() < deadline:
            time.sleep(0.25)
        assert runner.connected, runner.link_status().message
        # the avatar was prepared again on the new server; the anchor stayed here: the same frames as local
        assert np.array_equal(animator.animate(frames[3]), expected[3])
        assert any('is back after' in r.getMessage() for r in caplog.records)
    finally:
        runner.close()
