"""The Ray Serve deployment: one model per replica, one WebSocket per stream, frames batched across streams.

Transport: a WebSocket through Serve's FastAPI ingress. Serve keeps a WebSocket on the replica that accepted
it for the connection's whole life, so a stream's state (its prepared avatar) simply lives in the handler's
local variables on that replica; WebSockets pass through ordinary HTTP reverse proxies (``wss://`` with TLS
there); and the client is one small dependency. Serve's gRPC proxy offers unary and server-streaming calls
only, not the bidirectional stream a frame loop needs.

Direct route: with Serve's direct ingress on (``RAY_SERVE_ENABLE_DIRECT_INGRESS=1``, which ``main.py serve`` sets
unless ``--no-direct``), each replica also listens on a port of its own (30000-31000), and the welcome names it.
A client that can reach it moves its stream there after the handshake: frames then skip the proxy's relay
over Ray in both directions (about 2.5 ms a frame on a 2-core loopback), and the stream stays on the same
replica by construction. Clients that cannot reach it (firewall, a TLS reverse proxy in front) keep the
proxied stream.

Per stream: ``hello`` (token, protocol, image codec) -> ``welcome`` (model, frame size, device), then any
number of ``avatar`` / ``frame`` / ``keypoints`` requests, each answered in order (:mod:`.protocol`). A wrong
token, a malformed or oversize message closes that stream with an ``error`` message and a close code; the
other streams go on. This module imports Ray and FastAPI: only ``main.py serve`` and Ray's workers load it.
"""
# no "from __future__ import annotations": FastAPI must see the WebSocket annotation as a class
import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

from fastapi import FastAPI, WebSocket
from ray import serve
from starlette.websockets import WebSocketDisconnect, WebSocketState

from .batching import FrameBatcher
from .protocol import (CLIENT_MESSAGES, CLOSE_POLICY, CLOSE_SERVER_ERROR, HELLO_LIMIT, PROTOCOL, Limits, Message,
                       ProtocolError, check_codec, decode, encode)
from .tokens import matches
from .worker import FrameJob, ModelWorker, ServerOptions

log = logging.getLogger('live.remote.server')

HELLO_TIMEOUT_S = 10.0
MAX_STREAMS_PER_REPLICA = 32     # Serve counts an open WebSocket as one ongoing request
SERVER_NAME = 'fomm-live'

app = FastAPI()


@dataclass
class FrameRequest:
    job: FrameJob
    seq: int
    codec: str
    received: float      # perf_counter when the request arrived


@dataclass(eq=False)   # hashable by identity: the batcher keys its streams by it
class StreamState:
    codec: str = 'raw'
    source: object = None   # the prepared avatar (SourceInputs on the replica's device)


# helpers come before the class: serve.ingress pickles the app when it decorates it, with the globals that
# exist then
def _ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1000, 3)


def _peer(ws: WebSocket) -> str:
    client = ws.client
    return f'{client.host}:{client.port}' if client else 'unknown'


async def _receive(ws: WebSocket) -> bytes:
    message = await ws.receive()
    if message['type'] == 'websocket.disconnect':
        raise WebSocketDisconnect(message.get('code', 1000))
    if message.get('bytes') is None:
        raise ProtocolError('expected a binary message, got text')
    return message['bytes']


async def _refuse(ws: WebSocket, code: str, text: str, close_code: int) -> None:
    """Tell the client why (an error message, then the close code and a short reason); ignore a peer gone."""
    if ws.application_state != WebSocketState.CONNECTED:
        return
    try:
        await ws.send_bytes(encode('error', 0, code=code, message=text[:1000]))
        await ws.close(close_code, text.encode('utf-8')[:120].decode('utf-8', 'ignore'))
    except Exception:  # noqa: BLE001 - the peer may already be gone
        pass


async def direct_ingress_port() -> int | None:
    """The HTTP port Serve's direct ingress gave this replica; 0 when direct ingress is off, None when not (yet)
    known. Serve has no public call for it: the controller's target groups list each replica by actor name."""
    try:
        import ray
        from ray.serve._private import constants
        if not constants.RAY_SERVE_ENABLE_DIRECT_INGRESS:
            return 0
        me = ray.get_runtime_context().get_actor_name()
        controller = ray.get_actor(constants.SERVE_CONTROLLER_NAME, namespace=constants.SERVE_NAMESPACE)
        for group in await controller.get_target_groups.remote():
            if str(getattr(group.protocol, 'value', group.protocol)).upper() != 'HTTP':
                continue
            for target in group.targets:
                if target.name == me:
                    return int(target.port)
    except Exception as exc:  # noqa: BLE001 - a Serve version without it: streams stay on the proxy
        log.warning('no direct route for clients (%s: %s); streams go through the Serve proxy',
                    type(exc).__name__, exc)
        return 0
    return None


@serve.deployment(name='fomm-live-model', max_ongoing_requests=MAX_STREAMS_PER_REPLICA,
                  graceful_shutdown_timeout_s=2)
@serve.ingress(app)
class ModelServer:
    """One replica: the model (on its own torch thread), the batcher, and the stream handler."""

    def __init__(self, options: dict, token_digest: str):
        self.options = ServerOptions(**options)
        self._digest = token_digest
        self._torch = ThreadPoolExecutor(1, thread_name_prefix='fomm-model')   # all torch work: one thread
        self.worker: ModelWorker = self._torch.submit(ModelWorker, self.options).result()
        w = self.worker
        self.limits = Limits(w.size[0], w.size[1], w.num_kp)
        self.max_bytes = self.limits.max_message(CLIENT_MESSAGES)
        self.batcher = FrameBatcher(self._generate, self._torch, self.options.max_batch,
                                    self.options.batch_wait_ms / 1000)
        try:
            self.replica = str(serve.get_replica_context().replica_id.unique_id)
        except Exception:  # noqa: BLE001 - outside Serve (tests of the class itself)
            self.replica = 'local'
        self._direct: int | None = None   # resolved at the first handshake (the port is given after __init__)
        log.info('replica %s ready: %s on %s', self.replica, w.model_name, w.device_label)

    # == the stream ==========================================================================================
    @app.websocket('/')
    async def stream(self, ws: WebSocket) -> None:
        await ws.accept()
        state = StreamState()
        try:
            await self._handshake(ws, state)
            while True:
                message = decode(await _receive(ws), CLIENT_MESSAGES, self.limits, self.max_bytes)
                await ws.send_bytes(await self._answer(message, state, time.perf_counter()))
        except ProtocolError as exc:
            log.warning('stream from %s closed: %s', _peer(ws), exc)
            await _refuse(ws, 'auth' if exc.close_code == CLOSE_POLICY else 'protocol', str(exc), exc.close_code)
        except WebSocketDisconnect:
            pass
        except Exception as exc:  # noqa: BLE001 - this stream ends, the replica keeps serving the others
            log.exception('stream from %s failed', _peer(ws))
            await _refuse(ws, 'server', f'server error: {exc}', CLOSE_SERVER_ERROR)
        finally:
            self.batcher.leave(state)

    async def _handshake(self, ws: WebSocket, state: StreamState) -> None:
        try:
            data = await asyncio.wait_for(_receive(ws), HELLO_TIMEOUT_S)
        except asyncio.TimeoutError:
            raise ProtocolError(f'no hello within {HELLO_TIMEOUT_S:g} s') from None
        hello = decode(data, CLIENT_MESSAGES, None, HELLO_LIMIT)
        if hello.type != 'hello':
            raise ProtocolError(f'the first message must be hello, got {hello.type}')
        if not matches(hello.fields['token'], self._digest):
            raise ProtocolError('wrong or missing token: this server needs the token it printed at start-up '
                                '(client: --token-file FILE or FOMM_LIVE_TOKEN)', CLOSE_POLICY)
        if hello.fields['protocol'] != PROTOCOL:
            raise ProtocolError(f'protocol {hello.fields["protocol"]} is not supported (server: {PROTOCOL}); '
                                f'update fomm-live on the older side')
        state.codec = check_codec(hello.fields['codec'])
        w = self.worker
        await ws.send_bytes(encode('welcome', hello.seq, protocol=PROTOCOL, server=SERVER_NAME,
                                   device=w.device_label, runtime=w.runner.describe(), model=w.model_name,
                                   model_key=w.model_key, height=w.size[0], width=w.size[1], num_kp=w.num_kp,
                                   max_batch=self.batcher.max_batch, replica=self.replica,
                                   direct_port=await self._direct_port(),
                                   mouth_keypoints=','.join(map(str, w.mouth_keypoints or ())),
                                   mouth_gain=w.mouth_gain))

    async def _direct_port(self) -> int:
        """This replica's own port under Serve's direct ingress, 0 when it has none (asked once it is known)."""
        if self._direct is None:
            self._direct = await direct_ingress_port()
        return self._direct or 0

    async def _answer(self, m: Message, state: StreamState, received: float) -> bytes:
        loop = asyncio.get_running_loop()
        if m.type == 'frame':
            if state.source is None:
                raise ProtocolError('frame before avatar: send the avatar first')
            request = FrameRequest(FrameJob(state.source, m.arrays['kp_value'], m.arrays['kp_jacobian']), m.seq,
                                   state.codec, received)
            reply, _, _ = await self.batcher.submit(state, request)
            return reply
        if m.type == 'avatar':
            t0 = time.perf_counter()
            state.source = await loop.run_in_executor(self._torch, self.worker.prepare, m.arrays['image'])
            s = state.source
            value, jacobian = await loop.run_in_executor(
                self._torch, lambda: (s.kp_value.cpu().numpy(), s.kp_jacobian.cpu().numpy()))
            return encode('avatar_ready', m.seq, server_ms=_ms(received), model_ms=_ms(t0),
                          arrays={'kp_value': value, 'kp_jacobian': jacobian})
        if m.type == 'keypoints':
            t0 = time.perf_counter()
            value, jacobian = await loop.run_in_executor(self._torch, self.worker.keypoints, m.arrays['image'])
            return encode('keypoints', m.seq, server_ms=_ms(received), model_ms=_ms(t0),
                          arrays={'kp_value': value, 'kp_jacobian': jacobian})
        raise ProtocolError(f'{m.type} is only allowed as the first message')

    def _generate(self, requests: list[FrameRequest]) -> tuple[list[bytes], float]:
        """On the torch thread: one generator call for the batch, then each reply encoded."""
        images, model_ms = self.worker.generate([r.job for r in requests])
        replies = [encode('frame', r.seq, server_ms=_ms(r.received), model_ms=model_ms, batch=len(requests),
                          arrays={'image': image}, codecs={'image': r.codec})
                   for r, image in zip(requests, images)]
        return replies, model_ms

    def check_health(self) -> None:
        """Serve's periodic probe: a replica whose torch thread died is restarted."""
        if self._torch._shutdown:  # noqa: SLF001 - the executor has no public 'alive' flag
            raise RuntimeError('the model thread has stopped')


def deployment(options: ServerOptions, token_digest: str, replicas: int):
    """The bound application: ``replicas`` replicas, each with one GPU on CUDA (or ``threads`` CPUs)."""
    gpu = options.device.startswith('cuda')
    actor = {'num_cpus': 1 if gpu else options.threads, 'num_gpus': 1 if gpu else 0,
             'runtime_env': {'env_vars': {'OMP_NUM_THREADS': str(options.threads)}}}
    return ModelServer.options(num_replicas=replicas, ray_actor_options=actor).bind(asdict(options), token_digest)


def app_builder(args: dict) -> object:
    """For ``serve run live.remote.server:app_builder key=value ...`` and KubeRay's RayService
    (``import_path: live.remote.server:app_builder``): the ServerOptions fields plus ``replicas``; the token
    comes from FOMM_LIVE_TOKEN (or ``token_file``)."""
    from .tokens import digest, server_token
    args = dict(args)
    replicas = int(args.pop('replicas', 1))
    token, _ = server_token(args.pop('token_file', None))
    types = {'threads': int, 'max_batch': int, 'batch_wait_ms': float}
    options = ServerOptions(**{k: types.get(k, str)(v) for k, v in args.items()})
    return deployment(options, digest(token), replicas)


__all__ = ['ModelServer', 'app_builder', 'deployment']
