"""On-disk cache for exported and compiled graphs, keyed by weights content (not a path) and architecture."""
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


def graph_key(models, file_digest: str | None = None) -> str:
    """Key of a model's exported and compiled graphs: its weights (``file_digest``, the :func:`file_hash` of the
    file they came from, or else hashed here) and its config's model_params, so the same weights under another
    architecture setting (generator_params.mouth_keypoints adds no weights) never reuse a stale graph."""
    if file_digest is None:
        h = hashlib.sha256()
        for name in ('kp_detector', 'generator'):
            for key, tensor in getattr(models, name).state_dict().items():
                h.update(key.encode())
                h.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
        file_digest = h.hexdigest()[:16]
    params = json.dumps(models.config.get('model_params', {}), sort_keys=True, default=str)
    return f'{file_digest}-{hashlib.sha256(params.encode()).hexdigest()[:8]}'
