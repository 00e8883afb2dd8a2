"""``RemoteRunner``: the Runner whose model runs on a fomm-live server; what it must do locally stays here.

What crosses the wire (``send``):

* ``keypoints`` (default): the keypoint detector runs here (``keypoint_runner``: a local runner, e.g. eager
  float32 on this machine's CPU, the same graphs as the server's), the :class:`~fomm_model.Animator` applies calibration and relative motion as for any runner, and each
  frame sends the normalised keypoints (K x 6 floats: 244 bytes for 10 keypoints) and gets one frame back. One
  round trip per frame; needs the same checkpoint here as on the server (checked by content hash).
* ``crop``: the driving crop goes up (``raw`` or ``jpeg``), its keypoints come back, then the frame request
  follows: two round trips, no model needed here.

The avatar is sent once per connection (and again after a reconnect). Exactly one request is in flight per
stream: the engine thread waits for each answer (at most ``reply_timeout`` s), while the capture thread keeps
only the newest camera frame, so a slow server or link lowers the frame rate instead of adding latency.

Each connection is made through the URL given (Serve's proxy); when the welcome names the replica's own port
(Serve's direct ingress, see :mod:`.server`) the stream moves there, which skips the proxy's relay, and stays
on the proxy when that port cannot be reached (logged, and shown as the link's route).

When the link breaks (server killed, network gone, no answer in time) the runner says so at once (a warning
and :meth:`link_status`), keeps returning the last frame it got, and a background thread (``fomm-remote``)
reconnects every second, prepares the avatar again and hands the new link over. It never falls back to a
local model by itself: switching is the user's choice (the window offers it; headless, restart without
``--remote``).
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np
import torch

from fomm_model.inference import Runner, RunnerError
from fomm_model.inference.convert import image_to_tensor, tensor_to_image

from .client import Connection, RefusedError, RemoteError, ServerInfo, check_url, direct_url

log = logging.getLogger(__name__)

SEND_MODES = ('keypoints', 'crop')
REPLY_TIMEOUT_S = 1.5   # no answer in this time: the link counts as lost (said within 2 s)
RETRY_S = 1.0
DIRECT_TIMEOUT_S = 1.0  # a replica port that does not answer by then is out of reach (firewall, NAT)


@dataclass
class RemoteSource:
    """The avatar as the Animator sees it (its keypoints) plus what re-preparing it after a reconnect needs."""
    pixels: np.ndarray         # HxWx3 uint8, what goes over the wire, shown while no frame has come back yet
    kp_value: torch.Tensor     # (1, K, 2) float32, from the server's keypoint detector
    kp_jacobian: torch.Tensor


@dataclass
class LinkStatus:
    state: str                  # connected | reconnecting | refused | closed
    url: str
    route: str = ''             # 'direct to replica port N' or "through Serve's proxy"
    message: str = ''
    device: str = ''
    model: str = ''
    round_trip_ms: float = 0.0  # request sent -> answer in, per frame (all requests of the frame)
    server_ms: float = 0.0      # answer's time on the server (queue + batch + encoding)
    model_ms: float = 0.0       # the generator call on the server
    batch: float = 0.0          # mean frames per generator call
    bytes_up: float = 0.0       # per frame
    bytes_down: float = 0.0
    frames: int = 0
    lost_for_s: float = 0.0

    def line(self) -> str:
        """One line for the status bar and the headless summary."""
        if self.state != 'connected':
            return f'model server {self.url} {self.state}: {self.message}'
        return (f'model server {self.url} ({self.route}) on {self.device}: round trip {self.round_trip_ms:.1f} ms '
                f'(network {max(self.round_trip_ms - self.server_ms, 0):.1f}, server {self.server_ms:.1f}, model '
                f'{self.model_ms:.1f}, batch {self.batch:.1f}); {self.bytes_up / 1024:.1f} KiB up, '
                f'{self.bytes_down / 1024:.1f} KiB down per frame')


class RemoteRunner(Runner):
    """A Runner on a model server. Built once connected (RunnerError otherwise, saying why)."""

    name = 'remote'

    def __init__(self, url: str, token: str, *, send: str = 'keypoints', codec: str = 'raw',
                 keypoint_runner: Runner | None = None, model_key: str | None = None,
                 token_source: str = '', reply_timeout: float = REPLY_TIMEOUT_S, retry_s: float = RETRY_S,
                 direct: bool = True):
        if send not in SEND_MODES:
            raise RunnerError(f'send must be one of {", ".join(SEND_MODES)}, got {send!r}')
        if send == 'keypoints' and keypoint_runner is None:
            raise RunnerError('sending keypoints needs a local runner for the keypoint detector (or send crops)')
        try:
            self.url = check_url(url)
        except ValueError as exc:
            raise RunnerError(str(exc)) from None
        self.device, self.dtype, self.channels_last = torch.device('cpu'), torch.float32, False
        self.send_mode, self.codec = send, codec
        self._token, self._token_source, self._model_key = token, token_source, model_key
        self.reply_timeout, self.retry_s = reply_timeout, retry_s
        self.direct = direct
        self.route = ''
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._reconnector: threading.Thread | None = None
        self._times: deque = deque(maxlen=60)
        self._frames = 0
        self._pending_kp = (0.0, 0.0, 0, 0)   # crop mode: the keypoint request's ms, server ms, bytes up, down
        self._held: np.ndarray | None = None   # the last frame the server sent
        self._held_kp: tuple[torch.Tensor, torch.Tensor] | None = None
        self._source: RemoteSource | None = None
        self._lost_at: float | None = None
        self._lost_reason = ''
        self._message = ''
        self._state = 'connecting'
        conn = self._connect()            # RunnerError: unreachable, refused, other model
        self.info: ServerInfo = conn.info
        self.size = (conn.info.height, conn.info.width)
        self._conn: Connection | None = conn
        self._state = 'connected'
        self._kp = keypoint_runner if send == 'keypoints' else None

    # -- connecting -------------------------------------------------------------------------------------------
    def _connect(self) -> Connection:
        try:
            conn = Connection(self.url, self._token, self.codec)
        except RefusedError as exc:
            raise RunnerError(f'{exc} (token from {self._token_source or "the caller"})') from None
        except RemoteError as exc:
            raise RunnerError(str(exc)) from None
        if self.send_mode == 'keypoints' and self._model_key and conn.info.model_key != self._model_key:
            conn.close()
            raise RunnerError(f'the model server runs another model ({conn.info.model}) than this computer: the '
                              f'keypoints computed here would not fit it. Load the same checkpoint here '
                              f'(--checkpoint) or send the crops instead (--remote-send crop)')
        return self._go_direct(conn)

    def _go_direct(self, conn: Connection) -> Connection:
        """The same stream on the replica's own port when the server offers one and it answers; else ``conn``."""
        port = conn.info.direct_port
        if not (self.direct and port):
            self.route = "through Serve's proxy" + ('' if self.direct else ' (direct route off)')
            return conn
        url = direct_url(self.url, port)
        try:
            direct = Connection(url, self._token, self.codec, timeout=DIRECT_TIMEOUT_S)
        except RemoteError as exc:
            self.route = f"through Serve's proxy (replica port {port} unreachable)"
            log.warning("the model server's direct route %s cannot be reached (%s): frames go through Serve's "
                        "proxy, a few ms slower; open ports 30000-31000 to this computer to use it", url, exc)
            return conn
        conn.close()
        self.route = f'direct to replica port {port}'
        log.info('model server stream moved to its replica at %s (replica %s): skips the proxy hop', url,
                 direct.info.replica)
        return direct

    def _live(self) -> Connection | None:
        conn = self._conn
        if conn is not None and not conn.open:
            self._lost(conn, RemoteError(f'the model server at {conn.url} closed the connection'))
            return None
        return conn

    def _lost(self, conn: Connection, exc: Exception) -> None:
        with self._lock:
            if self._conn is not conn or self._closed.is_set():
                return
            self._conn = None
            self._state, self._lost_at = 'reconnecting', time.monotonic()
            self._lost_reason = str(exc)
            self._message = f'{exc}; holding the last frame and reconnecting every {self.retry_s:g} s'
            self._reconnector = threading.Thread(target=self._reconnect, args=(conn,), name='fomm-remote',
                                                 daemon=True)
            self._reconnector.start()
        log.warning('%s. Not falling back to the local model: switch "model runs on" to this computer in the '
                    'window, or run without --remote, to use it.', self._message)

    def _reconnect(self, old: Connection) -> None:
        old.close()
        while not self._closed.is_set():
            try:
                conn = self._connect()
                source = self._source
                if source is not None:
                    self._upload(conn, source)
            except (RunnerError, RemoteError) as exc:
                refused = 'another model' in str(exc) or isinstance(exc.__cause__, RefusedError) or \
                    'refused:' in str(exc)
                self._state = 'refused' if refused else 'reconnecting'
                self._message = (f'{self._lost_reason}; holding the last frame and reconnecting every '
                                 f'{self.retry_s:g} s (last try: {exc})')
                self._closed.wait(self.retry_s)
                continue
            with self._lock:
                if self._closed.is_set():
                    conn.close()
                    return
                down = time.monotonic() - (self._lost_at or time.monotonic())
                self.info, self._conn, self._state, self._message = conn.info, conn, 'connected', ''
                self._lost_at = None
            log.warning('model server %s is back after %.1f s (replica %s)', conn.url, down, conn.info.replica)
            return

    # -- Runner ---------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def keypoints(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self._kp is not None:
            kp = self._kp
            return kp.keypoints(image.to(kp.device, kp.dtype))
        return self._remote_keypoints(tensor_to_image(image))

    @torch.inference_mode()
    def keypoints_of_image(self, image: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        if self._kp is not None:
            return self._kp.keypoints_of_image(image)
        return self._remote_keypoints(image)   # the frame goes up as it is: no conversion and back

    def _remote_keypoints(self, pixels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        conn = self._live()
        if conn is not None:
            t0, sent, received = time.perf_counter(), conn.bytes_sent, conn.bytes_received
            try:
                reply = conn.request('keypoints', timeout=self.reply_timeout, arrays={'image': pixels},
                                     codecs={'image': self.codec})
            except RemoteError as exc:
                self._lost(conn, exc)
            else:
                self._pending_kp = ((time.perf_counter() - t0) * 1000, reply.fields['server_ms'],
                                    conn.bytes_sent - sent, conn.bytes_received - received)
                self._held_kp = tuple(torch.from_numpy(reply.arrays[k]) for k in ('kp_value', 'kp_jacobian'))
                return self._held_kp
        if self._held_kp is not None:
            return self._held_kp
        if self._source is not None:
            return self._source.kp_value, self._source.kp_jacobian
        raise RunnerError(self._message or 'the model server is not connected')

    def prepare_source(self, image: torch.Tensor) -> RemoteSource:
        """Sends the avatar; RunnerError while the server is not reachable (the previous avatar stays)."""
        conn = self._live()
        if conn is None:
            raise RunnerError(f'the avatar cannot be prepared: {self._message}')
        source = RemoteSource(tensor_to_image(image), torch.empty(0), torch.empty(0))
        try:
            self._upload(conn, source)
        except RemoteError as exc:
            self._lost(conn, exc)
            raise RunnerError(f'the avatar cannot be prepared: {exc}') from None
        self._source, self._held = source, None
        return source

    def _upload(self, conn: Connection, source: RemoteSource) -> None:
        reply = conn.request('avatar', timeout=max(self.reply_timeout, 10.0), arrays={'image': source.pixels},
                             codecs={'image': self.codec})
        source.kp_value = torch.from_numpy(reply.arrays['kp_value'])
        source.kp_jacobian = torch.from_numpy(reply.arrays['kp_jacobian'])
        conn.avatar = source

    def generate(self, source: RemoteSource, kp_value: torch.Tensor, kp_jacobian: torch.Tensor) -> torch.Tensor:
        return image_to_tensor(self.generate_image(source, kp_value, kp_jacobian), self.size)

    @torch.inference_mode()
    def generate_image(self, source: RemoteSource, kp_value: torch.Tensor, kp_jacobian: torch.Tensor) -> np.ndarray:
        """The server's frame as it came (uint8); the last one (or the avatar) while the link is down."""
        conn = self._live()
        if conn is not None:
            try:
                self._held = self._frame(conn, source, kp_value, kp_jacobian)
            except RemoteError as exc:
                self._lost(conn, exc)
        return (self._held if self._held is not None else source.pixels).copy()   # the caller's to change

    def _frame(self, conn: Connection, source: RemoteSource, kp_value, kp_jacobian) -> np.ndarray:
        if conn.avatar is not source:
            self._upload(conn, source)
        sent, received = conn.bytes_sent, conn.bytes_received
        t0 = time.perf_counter()
        reply = conn.request('frame', timeout=self.reply_timeout, arrays={
            'kp_value': kp_value.detach().float().cpu().numpy().reshape(1, -1, 2),
            'kp_jacobian': kp_jacobian.detach().float().cpu().numpy().reshape(1, -1, 2, 2)})
        rtt = (time.perf_counter() - t0) * 1000
        f = reply.fields
        kp_ms, kp_server_ms, kp_up, kp_down = self._pending_kp
        self._pending_kp = (0.0, 0.0, 0, 0)
        self._times.append((rtt + kp_ms, f['server_ms'] + kp_server_ms, f['model_ms'], f['batch'],
                            conn.bytes_sent - sent + kp_up, conn.bytes_received - received + kp_down))
        self._frames += 1
        return reply.arrays['image']

    # -- status ---------------------------------------------------------------------------------------------
    def link_status(self) -> LinkStatus:
        self._live()
        info = self.info
        status = LinkStatus(self._state, self.url, self.route, self._message, info.device, info.model,
                            frames=self._frames,
                            lost_for_s=time.monotonic() - self._lost_at if self._lost_at else 0.0)
        if self._times:
            a = np.array(list(self._times), dtype=float).mean(0)
            (status.round_trip_ms, status.server_ms, status.model_ms, status.batch, status.bytes_up,
             status.bytes_down) = (float(v) for v in a)
        return status

    @property
    def connected(self) -> bool:
        return self._live() is not None

    def describe(self) -> str:
        i = self.info
        return (f'remote {self.url} ({self.route}): {i.runtime}, server device {i.device} (sends '
                f'{self.send_mode}, {self.codec} images)')

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            conn, self._conn = self._conn, None
            self._state = 'closed'
        if conn is not None:
            conn.close()
