"""``main.py serve``: the model server (Ray Serve). Prints ``serving on ws://HOST:PORT`` once it answers.

Starts a local Ray instance (or joins a cluster with ``--address``), deploys :mod:`.server` with one replica
per GPU (or ``--replicas``), checks that a client can connect and be welcomed, then serves until Ctrl-C.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading

from fomm_model.devices import device_name

from .protocol import PROTOCOL
from .tokens import TokenError, digest, server_token
from .worker import ServerOptions

START_TIMEOUT_S = 120.0


def build_parser(prog: str = 'main.py serve') -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--config', help="model config name or YAML (default: the bundled model's)")
    p.add_argument('--checkpoint', help='model checkpoint .pth.tar (default: the bundled face model)')
    p.add_argument('--device', type=device_name, default='auto',
                   help='cpu, cuda (one replica per GPU) or cuda:N; auto: CUDA when available')
    p.add_argument('--dtype', choices=('float32', 'bfloat16', 'float16'),
                   help='precision of the model (default float32; float16 only on CUDA, checked at start-up)')
    p.add_argument('--host', default='127.0.0.1', help='address to listen on (0.0.0.0: every interface; put a '
                                                        'TLS reverse proxy in front, see README)')
    p.add_argument('--port', type=int, default=8765)
    p.add_argument('--replicas', type=int, help='model replicas (default: one per GPU; 1 on the CPU)')
    p.add_argument('--threads', type=int, default=1, help='CPU threads per replica (CPU serving)')
    p.add_argument('--max-batch', type=int, default=8,
                   help='most frames of concurrent streams per generator call (1: no batching)')
    p.add_argument('--batch-wait-ms', type=float, default=3.0,
                   help='the longest a frame waits for frames of other streams to join its batch')
    p.add_argument('--token-file', help='file holding the token clients must send (default: $FOMM_LIVE_TOKEN, '
                                        'else a token created in ~/.config/fomm-live/server-token)')
    p.add_argument('--tls-cert', help="serve wss:// directly with this certificate (PEM; Serve's own TLS)")
    p.add_argument('--tls-key', help='the private key of --tls-cert (PEM)')
    p.add_argument('--no-direct', dest='direct', action='store_false',
                   help="no direct route: streams stay on Serve's proxy instead of moving to their replica's own "
                        'port (30000-31000, which clients must then be able to reach)')
    p.add_argument('--address', help='join this Ray cluster (e.g. auto) instead of starting a local Ray')
    p.add_argument('-v', '--verbose', action='store_true', help="show Ray's and the replicas' logs here")
    return p


def _fail(message: str, code: int = 2) -> int:
    print(f'error: {message}', file=sys.stderr)
    return code


def _check_args(args: argparse.Namespace) -> str | None:
    if not 0 < args.port < 65536:
        return f'--port must be between 1 and 65535, got {args.port}'
    for name in ('replicas', 'threads', 'max_batch'):
        value = getattr(args, name)
        if value is not None and value < 1:
            return f'--{name.replace("_", "-")} must be at least 1, got {value}'
    if args.batch_wait_ms < 0:
        return f'--batch-wait-ms must not be negative, got {args.batch_wait_ms:g}'
    if bool(args.tls_cert) != bool(args.tls_key):
        return '--tls-cert and --tls-key go together'
    for flag in ('checkpoint', 'tls_cert', 'tls_key'):
        path = getattr(args, flag)
        if path and not os.path.isfile(path):
            return f'--{flag.replace("_", "-")} {path}: no such file'
    return None


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ':' in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # as uvicorn: old TIME_WAIT sockets do not count
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def resolve_device(device: str) -> tuple[str, int]:
    """(device, GPUs to use) for ``auto``/``cpu``/``cuda``/``cuda:N``; ValueError when CUDA is asked for and
    missing."""
    import torch
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if device == 'auto':
        device = 'cuda' if gpus else 'cpu'
    if device.startswith('cuda') and not gpus:
        raise ValueError(f'--device {device}: no CUDA GPU here (torch {torch.__version__}, '
                         f'CUDA build: {torch.version.cuda or "no"}); use --device cpu')
    return device, gpus


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    problem = _check_args(args)
    if problem:
        return _fail(problem)
    if args.direct and args.address is None:
        # read by Serve's controller and replicas, which inherit this process's environment (a cluster joined
        # with --address has its own: start it with RAY_SERVE_ENABLE_DIRECT_INGRESS=1)
        os.environ['RAY_SERVE_ENABLE_DIRECT_INGRESS'] = '1'
    # Ray reports usage statistics to its developers unless told not to; a user's model server should not.
    # Anyone who wants to send them sets RAY_USAGE_STATS_ENABLED=1.
    os.environ.setdefault('RAY_USAGE_STATS_ENABLED', '0')
    try:
        import ray
        from ray import serve
    except ImportError as exc:
        return _fail(f'the model server needs Ray Serve ({exc}): pip install -e ".[remote]"')
    try:
        device, gpus = resolve_device(args.device)
        token, where = server_token(args.token_file)
    except (ValueError, TokenError, OSError) as exc:
        return _fail(str(exc))
    replicas = args.replicas or (max(gpus, 1) if device == 'cuda' else 1)
    options = ServerOptions(args.config, args.checkpoint, device, args.dtype, args.threads, args.max_batch,
                            args.batch_wait_ms)
    if args.address is None and not _port_free(args.host, args.port):
        return _fail(f'port {args.port} on {args.host} is in use (another server?): choose another with --port')
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format='%(levelname)s %(name)s: %(message)s')
    scheme = 'wss' if args.tls_cert else 'ws'
    url = f'{scheme}://{args.host}:{args.port}'
    print(f'starting Ray Serve: {replicas} replica(s) on {device}, batches of up to {args.max_batch} '
          f'(wait {args.batch_wait_ms:g} ms), {where}', file=sys.stderr, flush=True)
    logs = {'log_level': 'INFO' if args.verbose else 'WARNING', 'enable_access_log': bool(args.verbose)}
    try:
        _start_ray(ray, args, replicas, device)
        http = {'host': args.host, 'port': args.port}
        if args.tls_cert:
            http.update(ssl_certfile=args.tls_cert, ssl_keyfile=args.tls_key)
        serve.start(http_options=http, logging_config=logs)
        from .server import deployment
        serve.run(deployment(options, digest(token), replicas), name='fomm-live', route_prefix='/',
                  logging_config=logs)
        info = _check_serving(url, token)
    except KeyboardInterrupt:
        _shutdown(ray, serve)
        return _fail('interrupted while starting', 130)
    except Exception as exc:  # noqa: BLE001 - Ray and Serve raise many kinds; the user gets one line
        _shutdown(ray, serve)
        return _fail(f'the model server did not start: {exc}', 1)
    route = (f"streams move to their replica's own port (replica {info.replica}: {info.direct_port})"
             if info.direct_port else "streams go through Serve's proxy")
    print(f'model: {info.model} ({info.height}x{info.width}, {info.num_kp} keypoints) on {info.device}; '
          f'protocol {PROTOCOL}; {route}', file=sys.stderr)
    print(f'serving on {url}', flush=True)
    return _serve_until_stopped(ray, serve)


def _start_ray(ray, args: argparse.Namespace, replicas: int, device: str) -> None:
    # the replicas' warnings (refused streams, errors) reach this console; Serve's own INFO logs stay in files
    quiet = {'include_dashboard': False, 'log_to_driver': True, 'configure_logging': args.verbose,
             'logging_level': logging.INFO if args.verbose else logging.WARNING}
    if args.address:
        ray.init(address=args.address, **quiet)
        return
    cpus = replicas * (1 if device.startswith('cuda') else args.threads)
    ray.init(num_cpus=max(cpus, 1), **quiet)


def _check_serving(url: str, token: str):
    """A real client's handshake: the server is up when it welcomes one (its own certificate is not checked:
    it may be self-signed, and this is the server talking to itself)."""
    import ssl
    from .client import wait_for_server
    context = None
    if url.startswith('wss://'):
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    return wait_for_server(url, token, START_TIMEOUT_S, ssl_context=context)


def _serve_until_stopped(ray, serve) -> int:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        while not stop.wait(1.0):
            pass
    finally:
        print('stopping the model server', file=sys.stderr, flush=True)
        _shutdown(ray, serve)
    return 0


def _shutdown(ray, serve) -> None:
    try:
        serve.shutdown()
    except Exception:  # noqa: BLE001 - best effort on the way out
        pass
    ray.shutdown()
