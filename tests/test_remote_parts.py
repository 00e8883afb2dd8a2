"""The remote model's parts without Ray: the message schema, the token handling, the batcher, the batched
worker and the options. The server itself is tested through real Ray Serve in test_remote_serve.py."""
from __future__ import annotations

import asyncio
import json
import stat
import struct
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from helpers import AVATAR, EINSTEIN, clip_frames

from live.remote import protocol as P
from live.remote import tokens
from live.remote.batching import FrameBatcher

LIMITS = P.Limits(128, 128, 10)


def _kp(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {'kp_value': rng.uniform(-1, 1, (1, 10, 2)).astype(np.float32),
            'kp_jacobian': rng.normal(size=(1, 10, 2, 2)).astype(np.float32)}


def _image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (128, 128, 3), dtype=np.uint8)


# == protocol ===================================================================================================
def test_messages_round_trip_exactly():
    kp = _kp()
    m = P.decode(P.encode('frame', 7, arrays=kp), P.CLIENT_MESSAGES, LIMITS)
    assert (m.type, m.seq) == ('frame', 7)
    for k in kp:
        assert m.arrays[k].dtype == np.float32 and np.array_equal(m.arrays[k], kp[k])
    img = _image()
    for codec in ('raw', 'png'):
        m = P.decode(P.encode('avatar', 1, arrays={'image': img}, codecs={'image': codec}), P.CLIENT_MESSAGES, LIMITS)
        assert np.array_equal(m.arrays['image'], img), codec
    hello = P.decode(P.encode('hello', 0, protocol=1, token='x' * 20, codec='raw', client='t'), P.CLIENT_MESSAGES,
                     None, P.HELLO_LIMIT)
    assert hello.fields == {'protocol': 1, 'token': 'x' * 20, 'codec': 'raw', 'client': 't'}


def test_jpeg_is_lossy_but_close_and_small():
    face = clip_frames(1)[0][::2, ::2].copy()     # a real 128x128 face
    data = P.encode('avatar', 1, arrays={'image': face}, codecs={'image': 'jpeg'})
    back = P.decode(data, P.CLIENT_MESSAGES, LIMITS).arrays['image']
    assert back.shape == face.shape and back.flags.writeable
    assert np.abs(back.astype(int) - face).mean() < 3.0
    assert len(data) < face.nbytes / 4


def _raw(header: dict, payload: bytes = b'') -> bytes:
    h = json.dumps(header).encode()
    return struct.pack('>I', len(h)) + h + payload


def _frame_header(**changes) -> dict:
    arrays = [{'name': 'kp_value', 'dtype': 'float32', 'shape': [1, 10, 2], 'codec': 'raw', 'nbytes': 80},
              {'name': 'kp_jacobian', 'dtype': 'float32', 'shape': [1, 10, 2, 2], 'codec': 'raw', 'nbytes': 160}]
    for key, value in changes.items():
        arrays[0][key] = value
    return {'type': 'frame', 'seq': 1, 'arrays': arrays}


@pytest.mark.parametrize('data, expected, code', [
    (b'\x00\x00', 'shorter than', P.CLOSE_BAD_DATA),
    (struct.pack('>I', 10 ** 6) + b'{}', 'header length', P.CLOSE_BAD_DATA),
    (struct.pack('>I', 3) + b'\xff\xfe{', 'not UTF-8 JSON', P.CLOSE_BAD_DATA),
    (_raw([1, 2]), 'JSON object', P.CLOSE_BAD_DATA),
    (_raw({'type': 'pickle', 'seq': 1}), 'unknown message type', P.CLOSE_BAD_DATA),
    (_raw({'type': 'frame', 'seq': -1, 'arrays': []}), 'seq must be', P.CLOSE_BAD_DATA),
    (_raw({'type': 'frame', 'seq': 1, 'extra': 1, 'arrays': []}), 'unknown field', P.CLOSE_BAD_DATA),
    (_raw({'type': 'frame', 'seq': 1, 'arrays': []}), 'expected arrays', P.CLOSE_BAD_DATA),
    (_raw(_frame_header(dtype='float64'), bytes(240)), 'must be float32', P.CLOSE_BAD_DATA),
    (_raw(_frame_header(shape=[1, 11, 2]), bytes(240)), 'must have shape', P.CLOSE_BAD_DATA),
    (_raw(_frame_header(codec='jpeg'), bytes(240)), 'codec must be', P.CLOSE_BAD_DATA),
    (_raw(_frame_header(nbytes=10 ** 9), bytes(240)), 'does not fit', P.CLOSE_TOO_BIG),
    (_raw(_frame_header(), bytes(200)), 'ends inside', P.CLOSE_BAD_DATA),
    (_raw(_frame_header(), bytes(250)), 'after the last array', P.CLOSE_BAD_DATA),
    (_raw(_frame_header(), np.full(60, np.nan, np.float32).tobytes()), 'NaN', P.CLOSE_BAD_DATA),
    (_raw({'type': 'avatar', 'seq': 1, 'arrays': [{'name': 'image', 'dtype': 'uint8', 'shape': [128, 128, 3],
                                                   'codec': 'jpeg', 'nbytes': 5}]}, b'abcde'),
     'does not decode', P.CLOSE_BAD_DATA),
])
def test_malformed_messages_are_refused_with_the_reason(data, expected, code):
    with pytest.raises(P.ProtocolError, match=expected) as info:
        P.decode(data, P.CLIENT_MESSAGES, LIMITS, LIMITS.max_message(P.CLIENT_MESSAGES))
    assert info.value.close_code == code


def test_oversize_messages_and_wrong_image_sizes_are_refused():
    limit = LIMITS.max_message(P.CLIENT_MESSAGES)
    assert 128 * 128 * 3 < limit < 128 * 128 * 3 * 2
    with pytest.raises(P.ProtocolError, match='over the') as info:
        P.decode(b'\0' * (limit + 1), P.CLIENT_MESSAGES, LIMITS, limit)
    assert info.value.close_code == P.CLOSE_TOO_BIG
    small = P.encode('avatar', 1, arrays={'image': _image()[:64]}, codecs={'image': 'png'})
    with pytest.raises(P.ProtocolError, match='shape'):
        P.decode(small, P.CLIENT_MESSAGES, LIMITS)
    # an encoded image that declares the right shape but holds another size: caught before decoding pixels
    body = P.encode_image(_image()[:64], 'png')
    liar = _raw({'type': 'avatar', 'seq': 1, 'arrays': [{'name': 'image', 'dtype': 'uint8', 'shape': [128, 128, 3],
                                                        'codec': 'png', 'nbytes': len(body)}]}, body)
    with pytest.raises(P.ProtocolError, match='is 128x64, declared 128x128'):
        P.decode(liar, P.CLIENT_MESSAGES, LIMITS)
    with pytest.raises(P.ProtocolError, match='not allowed before the handshake'):
        P.decode(P.encode('frame', 1, arrays=_kp()), P.CLIENT_MESSAGES, None)
    with pytest.raises(P.ProtocolError, match='got text'):
        P.decode('{"type": "frame"}', P.CLIENT_MESSAGES, LIMITS)


# == tokens =====================================================================================================
def test_server_creates_a_private_token_once_and_clients_find_it(tmp_path, monkeypatch):
    monkeypatch.delenv(tokens.ENV, raising=False)
    monkeypatch.setattr(tokens, 'DEFAULT_TOKEN_FILE', tmp_path / 'cfg' / 'server-token')
    with pytest.raises(tokens.TokenError, match='--token-file FILE or set FOMM_LIVE_TOKEN'):
        tokens.client_token(None)
    token, where = tokens.server_token(None)
    path = tmp_path / 'cfg' / 'server-token'
    assert 'new token saved in' in where and str(path) in where
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and path.read_text().strip() == token
    assert tokens.server_token(None)[0] == token                  # kept across restarts
    assert tokens.client_token(None) == (token, str(path))
    monkeypatch.setenv(tokens.ENV, 'e' * 24)
    assert tokens.client_token(None)[0] == 'e' * 24               # the environment before the default file
    other = tmp_path / 'other'
    other.write_text('f' * 30 + '\n')
    assert tokens.client_token(str(other))[0] == 'f' * 30         # --token-file before the environment
    assert tokens.matches('f' * 30, tokens.digest('f' * 30)) and not tokens.matches('g' * 30, tokens.digest('f' * 30))
    assert not tokens.matches(None, tokens.digest('f' * 30))


def test_bad_tokens_are_refused_with_the_fix(tmp_path, monkeypatch):
    monkeypatch.delenv(tokens.ENV, raising=False)
    short = tmp_path / 'short'
    short.write_text('abc')
    with pytest.raises(tokens.TokenError, match='at least 16 characters'):
        tokens.client_token(str(short))
    with pytest.raises(tokens.TokenError, match='no such file'):
        tokens.server_token(str(tmp_path / 'missing'))


# == batching ===================================================================================================
class Recorder:
    """A real batch function: doubles numbers, remembers each batch, takes ``cost_s``."""

    def __init__(self, cost_s: float = 0.0):
        self.batches: list[list[int]] = []
        self.cost_s = cost_s

    def __call__(self, jobs: list[int]) -> tuple[list[int], float]:
        time.sleep(self.cost_s)
        self.batches.append(list(jobs))
        return [2 * j for j in jobs], self.cost_s


def test_a_lone_stream_never_waits_for_a_batch():
    rec = Recorder()

    async def run() -> list[float]:
        with ThreadPoolExecutor(1) as pool:
            b = FrameBatcher(rec, pool, max_batch=8, max_wait_s=0.2)
            waits = []
            for i in range(5):
                t0 = time.perf_counter()
                result, size, _ = await b.submit('only', i)
                waits.append(time.perf_counter() - t0)
                assert (result, size) == (2 * i, 1)
            return waits
    waits = asyncio.run(run())
    assert max(waits) < 0.1, waits          # far below the 0.2 s wait: nobody else is expected
    assert rec.batches == [[0], [1], [2], [3], [4]]


def test_a_stream_that_went_quiet_is_not_waited_for():
    rec = Recorder()

    async def run() -> list[float]:
        with ThreadPoolExecutor(1) as pool:
            b = FrameBatcher(rec, pool, max_batch=8, max_wait_s=0.2)
            for i in range(3):                  # a client that then pauses (no face) without closing
                await b.submit('paused', i)
            await asyncio.sleep(0.15)
            waits = []
            for i in range(5):
                t0 = time.perf_counter()
                await b.submit('active', i)
                waits.append(time.perf_counter() - t0)
            return waits
    waits = asyncio.run(run())
    assert max(waits) < 0.1, waits          # counting streams seen in the last second would wait 0.2 s each


def test_concurrent_streams_share_calls_and_a_closed_stream_is_not_waited_for():
    rec = Recorder(cost_s=0.02)

    async def stream(b: FrameBatcher, name: str, n: int, out: dict) -> None:
        for i in range(n):
            result, size, _ = await b.submit(name, i)
            assert result == 2 * i
            out.setdefault(name, []).append(size)
        b.leave(name)

    async def run() -> tuple[dict, float]:
        with ThreadPoolExecutor(1) as pool:
            b = FrameBatcher(rec, pool, max_batch=8, max_wait_s=0.5)
            sizes: dict = {}
            await asyncio.gather(*(stream(b, f's{k}', 6, sizes) for k in range(4)))
            t0 = time.perf_counter()            # all four left: a new lone stream must not wait 0.5 s
            await b.submit('late', 1)
            return sizes, time.perf_counter() - t0
    sizes, late = asyncio.run(run())
    assert all(s == [4] * 6 for s in sizes.values()), sizes       # every frame ran in a batch of four
    assert len(rec.batches) == 7 and late < 0.3


def test_batch_size_is_capped_and_errors_reach_every_caller():
    def failing(jobs):
        raise RuntimeError('device lost')

    async def run():
        with ThreadPoolExecutor(1) as pool:
            rec = Recorder()
            b = FrameBatcher(rec, pool, max_batch=2, max_wait_s=0.05)
            await asyncio.gather(*(b.submit(k, k) for k in range(5)))
            bad = FrameBatcher(failing, pool, max_batch=4, max_wait_s=0.01)
            results = await asyncio.gather(*(bad.submit(k, k) for k in range(3)), return_exceptions=True)
            return rec.batches, results
    batches, results = asyncio.run(run())
    assert max(len(b) for b in batches) == 2 and sorted(sum(batches, [])) == list(range(5))
    assert all(isinstance(r, RuntimeError) and 'device lost' in str(r) for r in results)


# == the worker (the replica's model, batched) ==================================================================
@pytest.fixture(scope='module')
def worker_and_local():
    import torch
    from PIL import Image

    from fomm_model import Animator
    from live.model_files import load_model
    from live.options import ModelOptions
    from live.remote.worker import ModelWorker, ServerOptions
    torch.set_num_threads(1)
    models, _ = load_model(ModelOptions())
    avatars = [np.asarray(Image.open(p).convert('RGB').resize((128, 128))) for p in (AVATAR, EINSTEIN)]
    return ModelWorker(ServerOptions()), Animator(models, backend='torch'), avatars


def test_worker_batches_streams_with_different_avatars(worker_and_local):
    from live.remote.worker import FrameJob
    worker, local, avatars = worker_and_local
    frames = [f[::2, ::2].copy() for f in clip_frames(3)]
    sources = [worker.prepare(a) for a in avatars]
    jobs, expected = [], []
    for avatar, source, frame in zip(avatars, sources, frames):
        local.set_source(avatar)
        local.set_anchor(frames[2])
        kp = local.normalize(local.keypoints(frame))
        expected.append(local.generate(kp))
        jobs.append(FrameJob(source, kp.value[None], kp.jacobian[None]))
    alone = [worker.generate([job])[0][0] for job in jobs]
    together, model_ms = worker.generate(jobs)
    assert model_ms > 0 and len(together) == 2
    for a, b, e in zip(alone, together, expected):
        assert np.array_equal(a, e)                                # batch of one: exactly the local model
        assert np.abs(a.astype(int) - b).max() <= 2                # a batch may round differently by a level
    assert np.abs(together[0].astype(int) - together[1]).mean() > 20   # each stream kept its own avatar


# == options ====================================================================================================
def test_remote_options_are_declared_once_and_checked():
    import argparse

    from live.options import ModelOptions, add_arguments, from_args
    p = argparse.ArgumentParser()
    add_arguments(p, ModelOptions)
    m = from_args(ModelOptions, p.parse_args(['--remote', 'ws://gpu-box:8765', '--remote-send', 'crop',
                                              '--remote-codec', 'raw', '--token-file', 't']))
    assert (m.remote, m.remote_send, m.remote_codec, m.token_file) == ('ws://gpu-box:8765/', 'crop', 'raw', 't')
    assert from_args(ModelOptions, p.parse_args([])).remote is None
    assert from_args(ModelOptions, p.parse_args(['--remote', 'none'])).remote == ''
    with pytest.raises(SystemExit):
        p.parse_args(['--remote', 'http://gpu-box:8765'])


def test_bad_remote_urls_say_how_they_should_look(capsys):
    from live.headless import main
    with pytest.raises(SystemExit):
        main(['--remote', 'gpu-box:8765', '--avatar', str(AVATAR)])
    assert 'ws://HOST:PORT' in capsys.readouterr().err


def test_serve_command_checks_its_arguments_before_starting_ray(capsys, tmp_path):
    from live.remote.serve_cli import main
    assert main(['--port', '0']) == 2
    assert 'between 1 and 65535' in capsys.readouterr().err
    assert main(['--checkpoint', str(tmp_path / 'nope.pth.tar')]) == 2
    assert 'no such file' in capsys.readouterr().err
    assert main(['--tls-cert', str(AVATAR)]) == 2
    assert 'go together' in capsys.readouterr().err
