"""The shared secret between the model server and its clients.

Both sides read it from ``--token-file F`` or the ``FOMM_LIVE_TOKEN`` environment variable (the file wins when
both are given). A server given neither uses the token in :data:`DEFAULT_TOKEN_FILE`, creating one (readable
by the user only) if there is none, and prints where it is; a client given neither looks there too (a client
on the server's own machine then needs no flag). The server keeps only the token's SHA-256.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

ENV = 'FOMM_LIVE_TOKEN'
DEFAULT_TOKEN_FILE = Path(os.environ.get('XDG_CONFIG_HOME') or Path.home() / '.config') / 'fomm-live' / \
    'server-token'
MIN_LENGTH = 16


class TokenError(ValueError):
    """No usable token; the message says where one is looked for."""


def read_token_file(path: str | Path) -> str:
    p = Path(path).expanduser()
    try:
        token = p.read_text(encoding='utf-8').strip()
    except FileNotFoundError:
        raise TokenError(f'--token-file {p}: no such file') from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TokenError(f'--token-file {p}: cannot be read ({exc})') from None
    return _checked(token, f'--token-file {p}')


def _checked(token: str, where: str) -> str:
    if len(token) < MIN_LENGTH or any(c.isspace() for c in token):
        raise TokenError(f'the token from {where} must be at least {MIN_LENGTH} characters without spaces '
                         f'(create one with: python -c "import secrets; print(secrets.token_urlsafe(32))")')
    return token


def client_token(token_file: str | None) -> tuple[str, str]:
    """(token, where it came from) for a client; TokenError says where to put one."""
    if token_file:
        return read_token_file(token_file), f'--token-file {token_file}'
    if os.environ.get(ENV):
        return _checked(os.environ[ENV].strip(), ENV), f'${ENV}'
    if DEFAULT_TOKEN_FILE.is_file():
        return read_token_file(DEFAULT_TOKEN_FILE), str(DEFAULT_TOKEN_FILE)
    raise TokenError(f'the model server needs its token: pass --token-file FILE or set {ENV} (the server prints '
                     f'where it saved its token; on the server machine it is {DEFAULT_TOKEN_FILE})')


def server_token(token_file: str | None) -> tuple[str, str]:
    """(token, a sentence saying where it is) for the server; creates the default token file if needed."""
    if token_file:
        return read_token_file(token_file), f'token from --token-file {token_file}'
    if os.environ.get(ENV):
        return _checked(os.environ[ENV].strip(), ENV), f'token from ${ENV}'
    path = DEFAULT_TOKEN_FILE
    if path.is_file():
        return read_token_file(path), f'token in {path} (clients: --token-file {path} or ${ENV})'
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, 'w', encoding='utf-8') as f:
        f.write(token + '\n')
    return token, f'new token saved in {path} (clients: --token-file {path} or ${ENV})'


def digest(token: str) -> str:
    return hashlib.sha256(token.encode('utf-8')).hexdigest()


def matches(token: object, expected_digest: str) -> bool:
    """Constant-time comparison of a received token with the server's digest."""
    return isinstance(token, str) and hmac.compare_digest(digest(token), expected_digest)
