"""One WebSocket to the model server: connect, handshake, and one request/reply at a time.

Synchronous (``websockets.sync``: the library reads the socket on its own thread, so a server that dies is
noticed at once and ``recv`` has a timeout). Every failure is a :class:`RemoteError` whose message says what
happened and what to do; :class:`RefusedError` when the server said no (token, protocol), which retrying will
not fix.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from .protocol import (PROTOCOL, SERVER_MESSAGES, WIRE_CODECS, Limits, Message, ProtocolError, decode, encode)

CONNECT_TIMEOUT_S = 5.0
PING_INTERVAL_S = 1.0     # keep-alive pings: a silent, dead link is noticed within ~2 s even between frames
PING_TIMEOUT_S = 1.5


class RemoteError(RuntimeError):
    """The model server cannot be used right now; the message says why."""


class RefusedError(RemoteError):
    """The server refused this client (wrong token, other protocol): reconnecting will not help."""


def direct_url(url: str, port: int) -> str:
    """The URL of a replica's own port: the host the user gave (the server may be behind NAT), its scheme."""
    parts = urlsplit(url)
    host = f'[{parts.hostname}]' if ':' in (parts.hostname or '') else parts.hostname
    return f'{parts.scheme}://{host}:{int(port)}/'


def check_url(url: str) -> str:
    """``ws://HOST:PORT`` or ``wss://HOST[:PORT][/path]``; ValueError with an example otherwise."""
    parts = urlsplit(str(url).strip())
    if parts.scheme not in ('ws', 'wss') or not parts.hostname:
        raise ValueError(f'--remote must look like ws://HOST:PORT or wss://HOST/PATH, got {url!r}')
    return parts.geturl() if parts.path else parts.geturl() + '/'


@dataclass(frozen=True)
class ServerInfo:
    """What the server said about itself in its welcome."""
    url: str
    device: str
    runtime: str
    model: str
    model_key: str
    height: int
    width: int
    num_kp: int
    max_batch: int
    replica: str
    direct_port: int      # the replica's own port (Serve's direct ingress), 0: none
    mouth_keypoints: list[int] | None = None   # the model's lip keypoints (None: it names none)
    mouth_gain: float = 1.0                    # its calibrated mouth gain

    @property
    def limits(self) -> Limits:
        return Limits(self.height, self.width, self.num_kp)


class Connection:
    """An open, authenticated stream. Not thread-safe: one thread makes the requests."""

    def __init__(self, url: str, token: str, codec: str = 'raw', timeout: float = CONNECT_TIMEOUT_S,
                 client: str = 'fomm-live', ssl_context: Any = None):
        try:
            from websockets.exceptions import InvalidHandshake, InvalidURI, WebSocketException
            from websockets.sync.client import connect
        except ImportError as exc:
            raise RemoteError(f'--remote needs the websockets package ({exc}): pip install "websockets>=12"') from None
        if codec not in WIRE_CODECS:
            raise ValueError(f'codec must be one of {", ".join(WIRE_CODECS)}, got {codec!r}')
        self.url, self.codec = check_url(url), codec
        self.avatar: object = None          # the source object last prepared on this stream
        self.bytes_sent = self.bytes_received = 0
        self._seq = 0
        try:
            tls = {'ssl': ssl_context} if ssl_context is not None and self.url.startswith('wss:') else {}
            # entered at once (websockets >= 17 warns about a connection used outside ``with``); closed by close()
            self._ws = connect(self.url, **tls, open_timeout=timeout, compression=None, max_size=None, proxy=None,
                               ping_interval=PING_INTERVAL_S, ping_timeout=PING_TIMEOUT_S,
                               close_timeout=1.0).__enter__()
        except (InvalidURI, InvalidHandshake) as exc:
            raise RemoteError(f'{self.url} is not a fomm-live model server ({exc})') from None
        except (OSError, TimeoutError, WebSocketException) as exc:
            raise RemoteError(f'cannot reach the model server at {self.url}: {_reason(exc)}') from None
        try:
            welcome = self.request('hello', timeout=timeout, protocol=PROTOCOL, token=token, codec=codec,
                                   client=client)
        except BaseException:
            self.close()
            raise
        f = welcome.fields
        if welcome.type != 'welcome':
            raise RemoteError(f'unexpected answer to hello: {welcome.type}')
        self.info = ServerInfo(self.url, f['device'], f['runtime'], f['model'], f['model_key'], f['height'],
                               f['width'], f['num_kp'], f['max_batch'], f['replica'], f['direct_port'],
                               [int(i) for i in f['mouth_keypoints'].split(',')] if f['mouth_keypoints'] else None,
                               f['mouth_gain'])

    @property
    def open(self) -> bool:
        from websockets.protocol import State
        return self._ws.state is State.OPEN

    def request(self, kind: str, *, timeout: float, arrays: dict[str, np.ndarray] | None = None,
                codecs: dict[str, str] | None = None, **fields) -> Message:
        """Send one message and wait for its answer; an ``error`` answer or a lost link is a RemoteError."""
        from websockets.exceptions import ConnectionClosed
        self._seq += 1
        data = encode(kind, self._seq, arrays=arrays, codecs=codecs, **fields)
        limits = getattr(getattr(self, 'info', None), 'limits', None)
        try:
            self._ws.send(data)
            self.bytes_sent += len(data)
            reply = self._ws.recv(timeout=timeout)
        except TimeoutError:
            self.close()
            raise RemoteError(f'the model server at {self.url} did not answer within {timeout:g} s') from None
        except ConnectionClosed as exc:
            raise RemoteError(f'the model server at {self.url} closed the connection ({_closed(exc)})') from None
        except OSError as exc:
            raise RemoteError(f'the connection to {self.url} failed: {_reason(exc)}') from None
        self.bytes_received += len(reply)
        try:
            message = decode(reply, SERVER_MESSAGES, limits)
        except ProtocolError as exc:
            self.close()
            raise RemoteError(f'the model server at {self.url} sent a malformed answer: {exc}') from None
        if message.type == 'error':
            self.close()
            if message.fields['code'] == 'auth':
                raise RefusedError(f'the model server at {self.url} refused: {message.fields["message"]}')
            raise RemoteError(f'the model server at {self.url} ended the stream: {message.fields["message"]}')
        if message.seq != self._seq:
            self.close()
            raise RemoteError(f'answer {message.seq} does not match request {self._seq}')
        return message

    def close(self) -> None:
        try:
            self._ws.close()
        except Exception:  # noqa: BLE001 - closing a dead link
            pass


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return 'connection refused (is `python main.py serve` running there, on that port?)'
    if isinstance(exc, TimeoutError):
        return 'no answer (timed out)'
    return str(exc) or type(exc).__name__


def _closed(exc: BaseException) -> str:
    rcvd = getattr(exc, 'rcvd', None)
    if rcvd is None:
        return 'no close frame: the server or the network went away'
    return f'code {rcvd.code}' + (f': {rcvd.reason}' if rcvd.reason else '')


def wait_for_server(url: str, token: str, timeout: float, ssl_context: Any = None) -> ServerInfo:
    """Connect until a welcome comes back (``main.py serve``'s start-up check, tests); RemoteError after
    ``timeout`` seconds, RefusedError at once."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn = Connection(url, token, timeout=max(0.5, min(5.0, deadline - time.monotonic())),
                              ssl_context=ssl_context)
        except RefusedError:
            raise
        except RemoteError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.25)
            continue
        conn.close()
        return conn.info
