"""Reading and writing videos and images as uint8 RGB numpy arrays.

Videos are decoded with the ffmpeg binary bundled by imageio-ffmpeg (no system ffmpeg needed), GIFs with
Pillow, and a folder of frame images counts as a video (the original FOMM datasets use that layout, e.g.
vox-png). Audio is never decoded; ``write_video(..., audio_from=...)`` copies it with ffmpeg.
"""
from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np

from .output_paths import atomic_output

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = ('.mp4', '.mov', '.avi', '.mkv', '.webm', '.m4v', '.mpg', '.mpeg', '.gif')
IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.webp', '.tif', '.tiff')
# what write_video writes: H.264 in these containers (.webm wants VP8/VP9, .mpg MPEG-2), GIF through Pillow
VIDEO_WRITE_EXTENSIONS = ('.mp4', '.mov', '.mkv', '.m4v', '.avi', '.gif')
AUDIO_WRITE_EXTENSIONS = ('.mp4', '.mov', '.mkv', '.m4v')  # AAC sound, cut to the video's length
DEFAULT_FOLDER_FPS = 25.0  # a folder of frames carries no frame rate


class VideoReadError(ValueError):
    """A video exists but cannot be decoded."""


class ImageReadError(ValueError):
    """An image exists but cannot be decoded."""


class VideoWriteError(ValueError):
    """A video that cannot be written: a format we do not write, or an encoder that failed."""


def _ffmpeg_exe() -> str:
    import imageio_ffmpeg
    return imageio_ffmpeg.get_ffmpeg_exe()


def _existing(path: str | os.PathLike) -> Path:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f'no such file or directory: {p}')
    return p


def is_video_path(path: str | os.PathLike) -> bool:
    """True for a video file by extension, or a directory holding frame images."""
    p = Path(path)
    if p.is_dir():
        return any(c.suffix.lower() in IMAGE_EXTENSIONS for c in p.iterdir())
    return p.suffix.lower() in VIDEO_EXTENSIONS


def _frame_files(folder: Path) -> list[Path]:
    files = [c for c in folder.iterdir() if c.is_file() and c.suffix.lower() in IMAGE_EXTENSIONS]
    if not files:
        raise VideoReadError(f'{folder} is a directory without frame images ({", ".join(IMAGE_EXTENSIONS)})')

    def natural(p: Path):  # frame2 before frame10
        return [int(t) if t.isdigit() else t for t in re.split(r'(\d+)', p.name)]
    return sorted(files, key=natural)


def _unreadable(p: Path, why: object) -> VideoReadError:
    return VideoReadError(f'cannot read video {p}: {why}. Check that the file is complete and is a video '
                          f'(re-encode it, e.g. ffmpeg -i in.ext -c:v libx264 out.mp4)')


def video_fps(path: str | os.PathLike) -> float:
    """Frames per second (``DEFAULT_FOLDER_FPS`` for a folder of frames)."""
    p = _existing(path)
    if p.is_dir():
        return DEFAULT_FOLDER_FPS
    if p.suffix.lower() == '.gif':
        return _gif_fps(p)
    import imageio_ffmpeg
    gen = imageio_ffmpeg.read_frames(str(p), pix_fmt='rgb24')
    try:
        meta = next(gen)
    except Exception as exc:
        raise _unreadable(p, exc) from exc
    finally:
        gen.close()
    fps = float(meta.get('fps') or 0)
    return fps if fps > 0 else DEFAULT_FOLDER_FPS


def _gif_fps(p: Path) -> float:
    from PIL import Image
    try:
        with Image.open(p) as im:
            durations = []
            for i in range(getattr(im, 'n_frames', 1)):
                im.seek(i)
                durations.append(im.info.get('duration', 0) or 0)
    except Exception as exc:
        raise _unreadable(p, exc) from exc
    ms = float(np.median(durations)) if durations else 0.0
    return 1000.0 / ms if ms > 0 else 10.0


def iter_video(path: str | os.PathLike, max_frames: int | None = None) -> Iterator[np.ndarray]:
    """Frames (HxWx3 uint8 RGB) one by one, for videos too long to hold in memory.

    The file is checked before the first frame is yielded, so errors surface at the first ``next()``.
    """
    p = _existing(path)
    count = 0
    if p.is_dir():
        for f in _frame_files(p):
            if max_frames is not None and count >= max_frames:
                return
            yield read_image(f)
            count += 1
        return
    if p.suffix.lower() == '.gif':
        from PIL import Image, ImageSequence
        try:
            with Image.open(p) as im:
                for frame in ImageSequence.Iterator(im):
                    if max_frames is not None and count >= max_frames:
                        return
                    yield _pil_to_rgb(frame)
                    count += 1
        except (OSError, SyntaxError, ValueError) as exc:
            raise _unreadable(p, exc) from exc
        if count == 0:
            raise _unreadable(p, 'no frames')
        return
    import imageio_ffmpeg
    gen = imageio_ffmpeg.read_frames(str(p), pix_fmt='rgb24')
    try:
        try:
            meta = next(gen)
        except Exception as exc:
            raise _unreadable(p, _short(exc)) from exc
        w, h = meta['size']
        while max_frames is None or count < max_frames:
            try:
                buf = next(gen)
            except StopIteration:
                break
            except Exception as exc:
                raise _unreadable(p, _short(exc)) from exc
            yield np.frombuffer(buf, np.uint8).reshape(h, w, 3).copy()  # writable, callers may augment in place
            count += 1
    finally:
        gen.close()
    if count == 0 and max_frames != 0:
        raise _unreadable(p, 'it contains no decodable frames')


def _short(exc: BaseException) -> str:
    text = str(exc).strip()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return ' '.join(lines[-3:]) if lines else type(exc).__name__


def read_video(path: str | os.PathLike, max_frames: int | None = None,
               frame_shape: tuple[int, int] | None = None) -> tuple[np.ndarray, float]:
    """All frames as a (T, H, W, 3) uint8 RGB array, plus the frame rate.

    Accepts video files, GIFs, folders of frame images and (with ``frame_shape=(h, w)``) a single image
    holding frames side by side horizontally, as the original FOMM datasets do.
    """
    p = _existing(path)
    if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS:
        image = read_image(p)
        h, w = frame_shape if frame_shape is not None else image.shape[:2]
        if image.shape[0] != h or image.shape[1] % w:
            raise VideoReadError(f'{p}: a frame strip of shape {image.shape[:2]} cannot be split into '
                                 f'{h}x{w} frames')
        frames = image.reshape(h, -1, w, 3).transpose(1, 0, 2, 3)
        return np.ascontiguousarray(frames[:max_frames]), DEFAULT_FOLDER_FPS
    frames = list(iter_video(p, max_frames))
    shapes = {f.shape for f in frames}
    if len(shapes) > 1:
        raise VideoReadError(f'{p}: frames have different sizes {sorted(shapes)}; resize them to one size')
    fps = video_fps(p)
    if not frames:
        return np.zeros((0, 0, 0, 3), np.uint8), fps
    return np.stack(frames), fps


def has_audio(path: str | os.PathLike) -> bool:
    """True if the file has at least one audio stream (asks the bundled ffmpeg)."""
    p = _existing(path)
    if p.is_dir() or p.suffix.lower() in ('.gif',) + IMAGE_EXTENSIONS:
        return False
    proc = subprocess.run([_ffmpeg_exe(), '-hide_banner', '-nostdin', '-i', str(p)],
                          capture_output=True, text=True, errors='replace')
    # ffmpeg exits 1 without an output file, but still prints the stream list
    return re.search(r'Stream #\d+:\d+.*: Audio:', proc.stderr) is not None


def check_video_output(path: str | os.PathLike, audio: bool = False) -> None:
    """Raise VideoWriteError unless :func:`write_video` can write ``path``'s format (with sound if ``audio``)."""
    suffix = Path(path).suffix.lower()
    if suffix not in VIDEO_WRITE_EXTENSIONS:
        kind = f"'{suffix}' files" if suffix else 'a file without an extension'
        raise VideoWriteError(f'cannot write {kind} as a video ({path}); use one of '
                              f'{", ".join(VIDEO_WRITE_EXTENSIONS)}')
    if audio and suffix not in AUDIO_WRITE_EXTENSIONS:
        raise VideoWriteError(f'a {suffix} video cannot carry sound ({path}); use one of '
                              f'{", ".join(AUDIO_WRITE_EXTENSIONS)}, or leave the sound out')


def write_video(path: str | os.PathLike, frames: Iterable[np.ndarray], fps: float,
                audio_from: str | os.PathLike | None = None, quality: float = 8.0) -> int:
    """Write HxWx3 uint8 RGB frames (H.264 in mp4/mov/mkv/m4v/avi, or GIF); return the frame count.

    ``audio_from``: a file whose first audio stream is copied into the result (re-encoded to AAC, cut to
    the video's length); if it has no audio, a warning is logged and the video is written silent.
    The result appears atomically (``output_paths.atomic_output``): a failed run, an encoder that dies or a
    killed process never leaves a half-written file under ``path``, and an old file there stays as it was.
    """
    out = Path(path)
    check_video_output(out, audio=audio_from is not None)
    if fps <= 0:
        raise ValueError(f'fps must be > 0, got {fps}')
    if audio_from is not None:
        _existing(audio_from)
    with atomic_output(out) as tmp:
        if out.suffix.lower() == '.gif':
            n = _write_gif(tmp, frames, fps, out)
        else:
            n = _write_ffmpeg(tmp, frames, fps, quality, out)
        if n == 0:
            raise ValueError(f'no frames to write to {out}')
        if audio_from is not None:
            if has_audio(audio_from):
                with atomic_output(tmp, fsync=False) as muxed:
                    _mux_audio(tmp, Path(audio_from), muxed)
            else:
                log.warning('%s has no audio track; %s is written without sound', audio_from, out)
    return n


def _check_frame(frame: np.ndarray, index: int, size: tuple[int, int] | None) -> np.ndarray:
    arr = np.asarray(frame)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise ValueError(f'frame {index}: expected HxWx3 uint8 RGB, got {arr.shape} {arr.dtype}')
    if size is not None and arr.shape[:2] != size:
        raise ValueError(f'frame {index}: size {arr.shape[:2]} differs from the first frame {size}')
    return np.ascontiguousarray(arr)


def _encode_command(path: Path, size: tuple[int, int], fps: float, quality: float) -> list[str]:
    """ffmpeg reading raw RGB frames from stdin, writing H.264 yuv420p (plays everywhere)."""
    h, w = size
    cmd = [_ffmpeg_exe(), '-hide_banner', '-nostdin', '-loglevel', 'error', '-y', '-f', 'rawvideo',
           '-pix_fmt', 'rgb24', '-s', f'{w}x{h}', '-r', str(Fraction(fps).limit_denominator()), '-i', '-', '-an',
           '-c:v', 'libx264', '-pix_fmt', 'yuv420p', '-crf', str(int((1 - quality / 10) * 51))]
    if w % 2 or h % 2:  # yuv420p needs even sizes: scale up by one pixel where odd
        cmd += ['-vf', f'scale={w + w % 2}:{h + h % 2}']
    return cmd + [str(path)]


def _write_ffmpeg(path: Path, frames: Iterable[np.ndarray], fps: float, quality: float, target: Path) -> int:
    """Pipe frames into ffmpeg; its exit status is checked, so an encoder that fails or dies is an error."""
    proc = None
    n = 0
    size = None
    with tempfile.TemporaryFile() as errors:
        try:
            for frame in frames:
                arr = _check_frame(frame, n, size)
                if proc is None:
                    size = arr.shape[:2]
                    # own process group: Ctrl-C reaches Python, which then stops ffmpeg and removes the file
                    proc = subprocess.Popen(_encode_command(path, size, fps, quality), stdin=subprocess.PIPE,
                                            stdout=subprocess.DEVNULL, stderr=errors, start_new_session=True)
                try:
                    proc.stdin.write(arr.data)
                except OSError:  # broken pipe: ffmpeg is gone
                    raise _encoder_failed(proc, errors, target) from None
                n += 1
            if proc is not None:
                try:
                    proc.stdin.close()
                except OSError:
                    pass
                if proc.wait() != 0:
                    raise _encoder_failed(proc, errors, target)
        finally:
            if proc is not None:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                if not proc.stdin.closed:
                    try:
                        proc.stdin.close()
                    except OSError:
                        pass
    return n


def _encoder_failed(proc: subprocess.Popen, errors, target: Path) -> VideoWriteError:
    try:
        code = proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        code = proc.wait()
    errors.seek(0)
    tail = ' '.join(errors.read().decode('utf-8', 'replace').split())[-600:]
    if code < 0:
        try:
            how = f'was killed by {signal.Signals(-code).name} ({signal.strsignal(-code)})'
        except ValueError:
            how = f'was killed by signal {-code}'
    else:
        how = f'exited with code {code}'
    return VideoWriteError(f'could not write video {target}: the ffmpeg encoder {how}'
                           + (f' ({tail})' if tail else '') + f'. Nothing was written to {target} (an existing '
                           f'file there is unchanged); check the free disk space and that the folder is writable.')


def _write_gif(path: Path, frames: Iterable[np.ndarray], fps: float, target: Path) -> int:
    from PIL import Image
    images = [Image.fromarray(_check_frame(f, i, None)) for i, f in enumerate(frames)]
    if images:
        try:
            images[0].save(path, format='GIF', save_all=True, append_images=images[1:],
                           duration=int(round(1000 / fps)), loop=0)
        except OSError as exc:
            raise VideoWriteError(f'could not write {target}: {exc}. Nothing was written to {target} (an '
                                  f'existing file there is unchanged); check the free disk space.') from exc
    return len(images)


def _mux_audio(video: Path, audio_source: Path, out: Path) -> None:
    cmd = [_ffmpeg_exe(), '-hide_banner', '-nostdin', '-loglevel', 'error', '-y', '-i', str(video),
           '-i', str(audio_source), '-map', '0:v:0', '-map', '1:a:0', '-c:v', 'copy', '-c:a', 'aac',
           # pad a shorter sound track with silence and cut a longer one: the video keeps every frame
           '-af', 'apad', '-shortest', str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, errors='replace')
    if proc.returncode != 0:
        raise VideoWriteError(f'ffmpeg could not add the audio of {audio_source}: {proc.stderr.strip()[-1000:]}')


def _pil_to_rgb(im) -> np.ndarray:
    from PIL import Image
    if im.mode in ('I;16', 'I;16B', 'I;16L', 'I'):
        arr = np.asarray(im).astype(np.float64)
        peak = 65535.0 if im.mode.startswith('I;16') or arr.max() > 255 else 255.0
        arr = np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(arr[..., None], 3, axis=2)
    has_alpha = im.mode in ('RGBA', 'LA', 'PA', 'RGBa', 'La') or (im.mode == 'P' and 'transparency' in im.info)
    if has_alpha:
        rgba = im.convert('RGBA')
        white = Image.new('RGBA', rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert('RGB'))
    return np.asarray(im.convert('RGB'))


def read_image(path: str | os.PathLike) -> np.ndarray:
    """An image as HxWx3 uint8 RGB: transparency composited over white, grey/palette/16-bit expanded,
    and camera EXIF rotation applied (phone photos are stored sideways)."""
    p = _existing(path)
    if p.is_dir():
        raise ImageReadError(f'{p} is a directory, expected an image file')
    from PIL import Image, ImageOps, UnidentifiedImageError
    try:
        with Image.open(p) as im:
            im.load()
            im = ImageOps.exif_transpose(im) or im
            return np.ascontiguousarray(_pil_to_rgb(im))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(f'cannot read image {p}: {exc}. Use a PNG or JPEG file') from exc


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """HxWx3 uint8 -> ``size`` = (height, width): area averaging when shrinking (no aliasing), bilinear when
    enlarging. Like the original demo, the aspect ratio is not preserved; crop first if it matters."""
    arr = np.asarray(image)
    h, w = int(size[0]), int(size[1])
    if arr.shape[:2] == (h, w):
        return arr
    from PIL import Image
    shrink = arr.shape[0] >= h and arr.shape[1] >= w
    return np.array(Image.fromarray(np.ascontiguousarray(arr)).resize((w, h), Image.Resampling.BOX if shrink else
                                                Image.Resampling.BILINEAR))
