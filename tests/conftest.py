"""Shared test fixtures: location of ../shared (beside the repository root) and small helpers."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get('FOMM_SHARED_DIR', REPO.parent / 'shared'))
REFERENCE = SHARED / 'fixtures' / 'reference'

os.environ.setdefault('QT_QPA_PLATFORM', 'offscreen')


@pytest.fixture(scope='session')
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.fail(f"../shared not found at {SHARED}: tests need the shared data beside the repository")
    return SHARED


@pytest.fixture(scope='session')
def reference_dir(shared_dir) -> Path:
    return shared_dir / 'fixtures' / 'reference'


@pytest.fixture()
def recording_backend():
    """pyvirtualcam with an in-memory backend named 'recording' (see helpers.RecordingBackend)."""
    import pyvirtualcam
    from helpers import RecordingBackend
    from pyvirtualcam.camera import BACKENDS
    RecordingBackend.instances.clear()
    pyvirtualcam.register_backend('recording', RecordingBackend)
    yield RecordingBackend
    BACKENDS.pop('recording', None)


@pytest.fixture(scope='module')
def faces(tmp_path_factory):
    """A dataset root whose train/ holds two short real clips of two people."""
    root = tmp_path_factory.mktemp('faces')
    (root / 'train').mkdir()
    from helpers import CLIPS, make_clip
    for clip in CLIPS[:2]:
        make_clip(root / 'train' / clip.name, frames=8, clip=clip)
    return root
