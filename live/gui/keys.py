"""The keyboard shortcuts, in one table: keys, what they do (shown by F1), and the window action they call."""
from __future__ import annotations

CROP_STEP = 0.05
ZOOM_STEP = 0.05
OVERLAY_STEP = 0.1
MOUTH_GAIN_STEP = 0.25

# (keys, description, action): the window maps each action name to a method; 'avatar_number' gets the digit
KEYS: tuple[tuple[tuple[str, ...], str, str], ...] = (
    (('C', 'X'), 'Calibrate: the next frame with a face becomes the reference pose', 'calibrate'),
    (('F',), 'Auto-calibrate on/off', 'toggle:auto_calibrate'),
    (('[',), 'Avatar overlay weaker (to match poses)', f'nudge:overlay_alpha:{-OVERLAY_STEP}:0:1'),
    ((']',), 'Avatar overlay stronger', f'nudge:overlay_alpha:{OVERLAY_STEP}:0:1'),
    (('M',), "Mouth gain up: the avatar's lips move further for yours", f'mouth_gain:{MOUTH_GAIN_STEP}'),
    (('N',), 'Mouth gain down', f'mouth_gain:{-MOUTH_GAIN_STEP}'),
    (('A',), 'Previous avatar', 'avatar_step:-1'),
    (('D',), 'Next avatar', 'avatar_step:1'),
    (tuple(str(i) for i in range(1, 10)), 'Pick avatar 1-9', 'avatar_number'),
    (('Ctrl+O',), 'Add an avatar from a file (or drop image files on the window)', 'add_avatar'),
    (('0',), 'Passthrough on/off (send the camera instead of the avatar)', 'toggle:passthrough'),
    (('R',), 'Mirror the preview on/off', 'toggle:mirror_preview'),
    (('T',), 'Mirror the output on/off', 'toggle:mirror_output'),
    (('O',), 'Show keypoints on/off', 'view:show_keypoints'),
    (('B',), 'Show the crop box on/off', 'view:show_crop_box'),
    (('W',), 'Crop zoom in', f'nudge:crop_zoom:{ZOOM_STEP}:0.5:3'),
    (('S',), 'Crop zoom out', f'nudge:crop_zoom:{-ZOOM_STEP}:0.5:3'),
    (('U',), 'Move the crop up', f'offset:0:{-CROP_STEP}'),
    (('J',), 'Move the crop down', f'offset:0:{CROP_STEP}'),
    (('H',), 'Move the crop left', f'offset:{-CROP_STEP}:0'),
    (('K',), 'Move the crop right', f'offset:{CROP_STEP}:0'),
    (('V',), 'Start / stop the virtual camera', 'toggle_virtual_camera'),
    (('Ctrl+Shift+O',), 'Use a video file as the camera', 'choose_video_file'),
    (('F11',), 'Full screen on/off', 'toggle_full_screen'),
    (('F1',), 'This help', 'show_help'),
    (('Ctrl+Q',), 'Quit', 'close'),
)


def help_rows() -> list[tuple[str, str]]:
    """(keys, description) rows for the help dialog."""
    return [('1 – 9' if keys[0] == '1' else ' / '.join(keys), text) for keys, text, _ in KEYS]
