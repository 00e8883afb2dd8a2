"""The remote model server on loopback: added latency per frame, throughput per stream count with and without
batching, bytes per frame per transport mode, and the cost of each image codec.

    python -m benchmarks.bench_remote [--rounds 5] [--frames 30] [--seconds 8] [--streams 1 2 4 8]

Servers are real (``main.py serve`` subprocesses: Ray Serve, the bundled model, float32, one replica
with one torch thread); the first is started with batching (up to 8 frames, 3 ms wait), the second without
(``--max-batch 1``). Everything shares this machine's cores, client and server included, so:

* latency: local and remote frames are timed in interleaved rounds (medians), each frame the full
  ``Animator.animate`` (keypoints here + generator here or there);
* throughput: N client threads each send normalised keypoints for one avatar as fast as the answers come
  (one frame in flight per stream), without a local model, so that the server's cores are the bottleneck.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / 'shared'
CLIP = SHARED / 'data' / 'faces' / 'test' / 'dpe_d#misc__dpe_d.mp4'
AVATARS = sorted((SHARED / 'data' / 'avatars').glob('*.png'))
MODES = (('keypoints', 'raw'), ('keypoints', 'jpeg'), ('crop', 'raw'), ('crop', 'jpeg'))


def load(size=(128, 128)):
    import torch
    from PIL import Image

    from fomm_model.video_io import read_video
    from live.model_files import load_model
    from live.options import ModelOptions
    torch.set_num_threads(1)
    models, key = load_model(ModelOptions())
    frames = [np.asarray(Image.fromarray(f).resize(size[::-1], Image.BILINEAR)) for f in read_video(CLIP, 60)[0]]
    avatars = [np.asarray(Image.open(p).convert('RGB').resize(size[::-1], Image.LANCZOS)) for p in AVATARS]
    return models, key, frames, avatars


def remote_animator(server, models, key, send='keypoints', codec='raw', direct=True):
    from fomm_model import Animator
    from fomm_model.inference.torch_runner import TorchRunner
    from live.remote.runner import RemoteRunner
    runner = RemoteRunner(server.url, server.token, send=send, codec=codec,
                          keypoint_runner=TorchRunner(models) if send == 'keypoints' else None, model_key=key,
                          direct=direct)
    return runner, Animator(models, backend=runner, size=runner.size)


def time_frames(animator, frames) -> list[float]:
    out = []
    for f in frames:
        t0 = time.perf_counter()
        animator.animate(f)
        out.append((time.perf_counter() - t0) * 1000)
    return out


def latency(server, models, key, frames, avatar, rounds: int, n: int) -> dict:
    """Per-frame ms, local vs remote (keypoints, raw and jpeg), interleaved rounds; medians of round medians."""
    from fomm_model import Animator
    local = Animator(models, backend='torch')
    remotes = {codec: remote_animator(server, models, key, 'keypoints', codec) for codec in ('raw', 'jpeg')}
    remotes['raw via proxy'] = remote_animator(server, models, key, 'keypoints', 'raw', direct=False)
    animators = {'local': local, **{f'remote {c}': a for c, (_, a) in remotes.items()}}
    for a in animators.values():
        a.set_source(avatar)
        a.set_anchor(frames[0])
        time_frames(a, frames[:5])
    per = {name: [] for name in animators}
    links = {c: [] for c in remotes}
    for _ in range(rounds):
        for name, a in animators.items():
            per[name].append(statistics.median(time_frames(a, frames[:n])))
        for c, (r, _) in remotes.items():
            links[c].append(r.link_status())
    result = {name: statistics.median(v) for name, v in per.items()}
    for c, (r, _) in remotes.items():
        s = links[c]
        result[f'{c} round trip'] = statistics.median(x.round_trip_ms for x in s)
        result[f'{c} server'] = statistics.median(x.server_ms for x in s)
        result[f'{c} model'] = statistics.median(x.model_ms for x in s)
        r.close()
    return result


def throughput(server, avatars, kps, streams: int, seconds: float) -> tuple[float, float, float]:
    """(frames/s over all streams, mean batch, median per-frame round trip ms) with ``streams`` clients."""
    from live.remote.client import Connection
    conns = [Connection(server.url, server.token, 'raw') for _ in range(streams)]
    for i, c in enumerate(conns):
        c.request('avatar', timeout=30, arrays={'image': avatars[i % len(avatars)]})
    counts, batches, rtts = [0] * streams, [], []
    start, stop = threading.Barrier(streams + 1), threading.Event()

    def run(i: int) -> None:
        c, k = conns[i], 0
        start.wait()
        while not stop.is_set():
            value, jacobian = kps[k % len(kps)]
            t0 = time.perf_counter()
            reply = c.request('frame', timeout=30, arrays={'kp_value': value, 'kp_jacobian': jacobian})
            rtts.append((time.perf_counter() - t0) * 1000)
            batches.append(reply.fields['batch'])
            counts[i] += 1
            k += 1
    threads = [threading.Thread(target=run, args=(i,)) for i in range(streams)]
    for t in threads:
        t.start()
    start.wait()
    time.sleep(1.0)                       # warm-up: not counted
    counts[:], batches[:], rtts[:] = [0] * streams, [], []
    t0 = time.perf_counter()
    time.sleep(seconds)
    done, wall = sum(counts), time.perf_counter() - t0
    stop.set()
    for t in threads:
        t.join(60)
    for c in conns:
        c.close()
    return done / wall, float(np.mean(batches)), float(np.median(rtts))


def with_slow_reader(server, avatars, kps, seconds: float, late_s: float = 0.5) -> tuple[float, float]:
    """(frames/s, median round trip ms) of one stream while another client reads each answer ``late_s`` late."""
    from live.remote.client import Connection
    from live.remote.protocol import encode
    slow = Connection(server.url, server.token, 'raw')
    slow.request('avatar', timeout=30, arrays={'image': avatars[1 % len(avatars)]})
    stop = threading.Event()

    def lag() -> None:
        seq = 1000
        while not stop.is_set():
            value, jacobian = kps[seq % len(kps)]
            seq += 1
            slow._ws.send(encode('frame', seq, arrays={'kp_value': value, 'kp_jacobian': jacobian}))
            stop.wait(late_s)                 # the answer waits in the socket meanwhile
            slow._ws.recv(timeout=30)
    thread = threading.Thread(target=lag)
    thread.start()
    try:
        fps, _, rtt = throughput(server, avatars, kps, 1, seconds)
    finally:
        stop.set()
        thread.join(60)
        slow.close()
    return fps, rtt


def bytes_per_frame(server, models, key, frames, avatar, n: int = 20) -> dict:
    out = {}
    for send, codec in MODES:
        runner, a = remote_animator(server, models, key, send, codec)
        a.set_source(avatar)
        a.set_anchor(frames[0])
        for f in frames[:n]:
            a.animate(f)
        s = runner.link_status()
        out[send, codec] = (s.bytes_up, s.bytes_down, s.round_trip_ms)
        runner.close()
    return out


def codec_costs(frames128, size=(256, 256), reps: int = 50) -> list[tuple]:
    """(size, codec, encode ms, decode ms, bytes) for the frames sent and received."""
    from PIL import Image

    from live.remote.protocol import encode_image, decode_image
    rows = []
    for s in ((128, 128), size):
        imgs = [np.asarray(Image.fromarray(f).resize(s[::-1], Image.BILINEAR)) for f in frames128[:10]]
        for codec in ('raw', 'jpeg', 'png'):
            enc = []
            t0 = time.perf_counter()
            for i in range(reps):
                enc.append(encode_image(imgs[i % len(imgs)], codec))
            e = (time.perf_counter() - t0) * 1000 / reps
            t0 = time.perf_counter()
            for i in range(reps):
                if codec == 'raw':
                    np.frombuffer(enc[i], np.uint8).reshape(*s, 3).copy()
                else:
                    decode_image(enc[i], codec, (*s, 3))
            d = (time.perf_counter() - t0) * 1000 / reps
            rows.append((s, codec, e, d, float(np.mean([len(x) for x in enc]))))
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--rounds', type=int, default=5)
    p.add_argument('--frames', type=int, default=30, help='frames per latency round')
    p.add_argument('--seconds', type=float, default=8.0, help='per throughput measurement')
    p.add_argument('--streams', type=int, nargs='+', default=[1, 2, 4, 8])
    args = p.parse_args(argv)
    os.environ.setdefault('OMP_NUM_THREADS', '1')
    from fomm_model import Animator
    from fomm_model.devices import describe_cpu
    from live.remote.process import ServeProcess
    models, key, frames, avatars = load()
    from fomm_model.defaults import DEFAULT_CONFIG
    print(f'CPU: {describe_cpu()}; load average {os.getloadavg()[0]:.1f} at start; {DEFAULT_CONFIG} (128 px), float32, '
          f'1 torch thread on each side', flush=True)
    for codec_row in codec_costs(frames):
        (h, w), codec, e, d, nbytes = codec_row
        print(f'codec {h}x{w} {codec:4s}: encode {e:.2f} ms, decode {d:.2f} ms, {nbytes / 1024:.1f} KiB')
    local = Animator(models, backend='torch')
    local.set_source(avatars[0])
    local.set_anchor(frames[0])
    kps = []
    for f in frames:
        kp = local.normalize(local.keypoints(f))
        kps.append((kp.value[None].astype(np.float32), kp.jacobian[None].astype(np.float32)))

    with tempfile.TemporaryDirectory() as tmp:
        token = Path(tmp) / 'token'
        token.write_text('bench-token-' + 'x' * 24)
        results: dict[str, dict] = {}
        for label, extra in (('batched', ('--max-batch', '8', '--batch-wait-ms', '3')),
                             ('unbatched', ('--max-batch', '1'))):
            with ServeProcess(token, Path(tmp), extra=extra) as server:
                print(f'\n{label} server: {server.url}', flush=True)
                r: dict = {}
                if label == 'batched':
                    r['latency'] = latency(server, models, key, frames, avatars[0], args.rounds, args.frames)
                    r['bytes'] = bytes_per_frame(server, models, key, frames, avatars[0])
                r['throughput'] = {}
                for n in args.streams:
                    r['throughput'][n] = throughput(server, avatars, kps, n, args.seconds)
                    fps, batch, rtt = r['throughput'][n]
                    print(f'  {n} stream(s): {fps:.1f} frames/s, mean batch {batch:.2f}, round trip {rtt:.1f} ms',
                          flush=True)
                if label == 'batched':
                    r['slow reader'] = with_slow_reader(server, avatars, kps, args.seconds)
                    print(f"  1 stream beside a client that reads its answers 0.5 s late: "
                          f"{r['slow reader'][0]:.1f} frames/s, round trip {r['slow reader'][1]:.1f} ms", flush=True)
                results[label] = r
    report(results)
    return 0


def report(results: dict) -> None:
    lat = results['batched']['latency']
    codecs = ('raw', 'jpeg', 'raw via proxy')
    print('\n| per frame (128 px, median) | local | remote raw | remote jpeg | remote raw, via the proxy |\n'
          '|---|---|---|---|---|')
    print(f"| Animator.animate | {lat['local']:.1f} ms | " + ' | '.join(f"{lat['remote ' + c]:.1f} ms" for c in codecs)
          + ' |')
    print('| added by going remote | - | ' + ' | '.join(f"{lat['remote ' + c] - lat['local']:+.1f} ms" for c in codecs)
          + ' |')

    def parts(c: str) -> str:
        return f"{lat[c + ' round trip']:.1f} / {lat[c + ' server']:.1f} / {lat[c + ' model']:.1f} ms"
    print('| round trip / time on the server / model call | - | ' + ' | '.join(parts(c) for c in codecs) + ' |')
    print('| **round trip minus model call** | - | ' + ' | '.join(
        f"**{lat[c + ' round trip'] - lat[c + ' model']:.1f} ms**" for c in codecs) + ' |')
    print('\n| streams | batched: frames/s | mean batch | round trip | unbatched: frames/s | round trip |')
    print('|---|---|---|---|---|---|')
    for n, (fps, batch, rtt) in results['batched']['throughput'].items():
        ufps, _, urtt = results['unbatched']['throughput'][n]
        print(f'| {n} | {fps:.1f} | {batch:.2f} | {rtt:.0f} ms | {ufps:.1f} | {urtt:.0f} ms |')
    alone, slow = results['batched']['throughput'].get(1), results['batched'].get('slow reader')
    if alone and slow:
        print(f'\none stream: {alone[0]:.1f} frames/s, round trip {alone[2]:.1f} ms alone; {slow[0]:.1f} frames/s, '
              f'{slow[1]:.1f} ms beside a client that reads its answers 0.5 s late')
    print('\n| sends | images | bytes up / frame | bytes down / frame | round trip |\n|---|---|---|---|---|')
    for (send, codec), (up, down, rtt) in results['batched']['bytes'].items():
        print(f'| {send} | {codec} | {up:.0f} | {down:.0f} | {rtt:.1f} ms |')


if __name__ == '__main__':
    sys.exit(main())
