"""``main.py serve`` as a child process, for tests and benchmarks: start it, wait for ``serving on``, stop or
kill it (with every process of its session: Ray's daemons, the proxy and the replicas)."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


class ServeProcess:
    """One model server on 127.0.0.1; ``extra`` are more ``main.py serve`` flags."""

    def __init__(self, token_file: Path, log_dir: Path, port: int | None = None, extra: tuple[str, ...] = ()):
        self.port = port or free_port()
        self.token_file, self.log_dir, self.extra = Path(token_file), Path(log_dir), tuple(extra)
        self.url = f'ws://127.0.0.1:{self.port}'
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.stderr_path = self.log_dir / 'serve-0.err'

    @property
    def token(self) -> str:
        return self.token_file.read_text().strip()

    def start(self, timeout: float = 240) -> float:
        """Start and wait until it serves; returns the seconds it took. RuntimeError with its stderr if not."""
        self.starts += 1
        env = {**os.environ, 'OMP_NUM_THREADS': '1'}
        self.stderr_path = self.log_dir / f'serve-{self.starts}.err'
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, 'main.py', 'serve', '--port', str(self.port), '--token-file', str(self.token_file),
             *self.extra], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=self.stderr_path.open('w'), text=True,
            start_new_session=True)
        lines: list[str] = []
        threading.Thread(target=lambda: lines.extend(self.proc.stdout), daemon=True).start()
        while not any(line.startswith('serving on ') for line in lines):
            if self.proc.poll() is not None or time.monotonic() - t0 > timeout:
                self.kill()
                raise RuntimeError(f'the model server did not start: {self.stderr()[-3000:]}')
            time.sleep(0.2)
        return time.monotonic() - t0

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors='replace') if self.stderr_path.exists() else ''

    def session_processes(self) -> list:
        """The psutil processes of the server's session: main.py serve and everything Ray started for it."""
        import psutil
        if self.proc is None:
            return []
        found = []
        for p in psutil.process_iter():
            try:
                if os.getsid(p.pid) == self.proc.pid:
                    found.append(p)
            except (ProcessLookupError, PermissionError, psutil.Error):
                pass
        return found

    def kill(self) -> None:
        """SIGKILL to every process of the server's session: what a crash or a pulled plug looks like."""
        import psutil
        if self.proc is None:
            return
        for p in self.session_processes():
            try:
                p.kill()
            except psutil.Error:
                pass
        self.proc.wait(30)
        self.proc = None

    def stop(self, timeout: float = 60) -> None:
        """Ctrl-C (Serve and Ray shut down), then kill what is left."""
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        self.kill()

    def __enter__(self) -> 'ServeProcess':
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
