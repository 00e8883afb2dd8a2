"""On-disk cache for exported and compiled graphs, keyed by the weights' content (not a path)."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

CACHE_ENV = 'FOMM_LIVE_CACHE'


def cache_dir(kind: str) -> Path:
    """``$FOMM_LIVE_CACHE/<kind>`` or ``~/.cache/fomm-live/<kind>``."""
    root = os.environ.get(CACHE_ENV)
    base = Path(root).expanduser() if root else \
        Path(os.environ.get('XDG_CACHE_HOME') or Path.home() / '.cache').expanduser() / 'fomm-live'
    path = base / kind
    path.mkdir(parents=True, exist_ok=True)
    return path


def file_hash(path: str | Path) -> str:
    """sha256 of a file (first 16 hex digits), remembered by path/size/mtime so big checkpoints are read once."""
    p = Path(path).resolve()
    st = p.stat()
    key = f'{p}|{st.st_size}|{st.st_mtime_ns}'
    memo_path = cache_dir('hashes') / 'hashes.json'
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    if key in memo:
        return memo[key]
    h = hashlib.sha256()
    with open(p, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    digest = h.hexdigest()[:16]
    memo[key] = digest
    tmp = memo_path.with_suffix(f'.{os.getpid()}.tmp')
    try:
        tmp.write_text(json.dumps(memo))
        os.replace(tmp, memo_path)
    except OSError:
        pass
    return digest


def atomic_write(path: Path, write) -> None:
    """Call ``write(tmp_path)`` then rename into place: a crash never leaves a half-written cache entry."""
    tmp = path.with_name(f'.{path.name}.{os.getpid()}.tmp')
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def weights_key(models) -> str:
    """sha256 (first 16 hex digits) of the kp detector's and generator's weights: keys exported graphs when the
    models did not come from a file (a file's key is :func:`file_hash`, which reads it once)."""
    h = hashlib.sha256()
    for name in ('kp_detector', 'generator'):
        for key, tensor in getattr(models, name).state_dict().items():
            h.update(key.encode())
            h.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]
