"""The demo videos' renderer: everything that makes one `DemoVideo` (frames, exact
flow, audio, actor mask) from a class id and a random generator.

Numbers: 8 classes; 10 s at 10 fps = 100 frames of 64x80 RGB; 8 kHz mono float32 audio
in [-1, 1]; forward flow (flow[t] = motion from frame t to t+1), every component below
7 px per frame by design (the fastest actor plus camera). `video_ssl.data.demo` turns
videos into records, shards and the cached dataset.

Each video shows one actor object over a textured background, with distractors.
A class is a (shape, motion, sound) triple; class pairs differ in one cue or more:

    0 disc_bounce_hum       reference
    1 disc_bounce_beep      sound only differs from 0
    2 disc_orbit_hum        motion only differs from 0
    3 square_bounce_hum     appearance only differs from 0
    4 square_spin_beep      motion + sound differ from 3
    5 cross_spin_beep       appearance only differs from 4
    6 cross_pulse_chirp     motion + sound differ from 5
    7 triangle_pulse_chirp  appearance only differs from 6

Motions evolve over the 10 s: `bounce` falls under gravity and bounces off the floor
and walls; `orbit` circles a drifting centre with a varying radius and reversals;
`spin` rotates a drifting shape with reversals; `pulse` grows and shrinks at a
drifting rate. Sounds: `hum` is a steady low harmonic tone (90-180 Hz) unrelated to
the motion; `beep` is a high tone burst (1.2-2.4 kHz) at each motion event (floor or
wall hit, quarter turn); `chirp` is a tone whose pitch follows the actor's size.
Nuisance: the scene cuts every 2-3.5 s to a new background (two-colour gradient at a
random angle plus coarse and fine noise texture), a new actor colour (contrasting
with the background in brightness, saturation and hue drawn anew) and new distractor
colours, while the actor's shape, motion and sound carry on. Appearance is the shape
and its colour family (a hue band per shape, `SHAPE_HUES`): in v3 the hue was free
too, and at the demo's budget (a few hundred steps of a 1/4-width Slow R-18) neither
supervised nor self-supervised training learned shape alone. Without
the cuts a video's background is the easiest cue its clips share, and instance
discrimination learns it instead of the class; with them, temporally distant clips
(the rho-methods' positives) share only the class cues. Also per video: size,
speed, start phase and position, slow camera motion (the whole frame translates,
visible in the flow too), 2-4 drifting distractor bars, and audio noise of random
level. The nuisance, appearance, motion and sound draws use separate random
streams, so two classes generated from one seed share everything but the cues in
which they differ.

Ground-truth flow is exact: every object is an anti-aliased signed-distance shape
under a known similarity transform (centre, scale, angle) per frame, so a pixel owned
by an object at frame t moves to where that transform puts it at t+1; background
pixels move with the camera.
"""
from __future__ import annotations

import colorsys
import dataclasses

import cv2
import numpy as np

FPS = 10.0
NUM_FRAMES = 100
HEIGHT, WIDTH = 64, 80
SAMPLE_RATE = 8000

CLASSES = (
    ("disc", "bounce", "hum"),
    ("disc", "bounce", "beep"),
    ("disc", "orbit", "hum"),
    ("square", "bounce", "hum"),
    ("square", "spin", "beep"),
    ("cross", "spin", "beep"),
    ("cross", "pulse", "chirp"),
    ("triangle", "pulse", "chirp"),
)
LABELS = tuple("_".join(c) for c in CLASSES)

# Each shape's colour family (HSV hue); every scene draws a hue within +-_HUE_SPREAD.
SHAPE_HUES = {"disc": 0.0, "square": 0.25, "cross": 0.5, "triangle": 0.75}
_HUE_SPREAD = 0.06
_CAMERA_MARGIN = 12  # px of background beyond each frame edge
_PULSE_DEPTH = 0.4  # relative size change of the pulsing actor
_AUDIO_EVENT_S = 0.08


@dataclasses.dataclass
class DemoVideo:
    """One generated video. flow[t] is the (dx, dy) motion from frame t to t+1."""

    label: int
    frames: np.ndarray  # (N, H, W, 3) uint8 RGB
    flow: np.ndarray  # (N - 1, H, W, 2) float32 px
    audio: np.ndarray  # (S,) float32 in [-1, 1]
    actor_mask: np.ndarray  # (N, H, W) bool: pixels the actor owns
    scene: np.ndarray  # (N,) int: each frame's scene (the nuisance cut every 2-3.5 s)


@dataclasses.dataclass
class _Track:
    """A shape's pose at every frame, in image coordinates (camera applied)."""

    shape: str
    colour: np.ndarray  # (3,) or per frame (N, 3) float RGB in [0, 1]
    cx: np.ndarray
    cy: np.ndarray
    scale: np.ndarray  # px per shape unit
    angle: np.ndarray  # radians

    def __post_init__(self):
        # float32 halves the cost of the per-pixel maths; errors stay far below 1/255.
        for name in ("cx", "cy", "scale", "angle"):
            setattr(self, name, np.asarray(getattr(self, name), np.float32))


# ----------------------------------------------------------------------------- shapes

def _box_sdf(ux, uy, bx, by):
    qx, qy = np.abs(ux) - bx, np.abs(uy) - by
    outside = np.hypot(np.maximum(qx, 0), np.maximum(qy, 0))
    return outside + np.minimum(np.maximum(qx, qy), 0)


def _triangle_sdf(ux, uy, r=1.0):
    """Equilateral triangle with circumradius-ish size r (Quilez's exact SDF)."""
    k = np.sqrt(3.0)
    px = np.abs(ux) - r
    py = uy + r / k
    fold = px + k * py > 0
    px, py = (np.where(fold, (px - k * py) / 2, px), np.where(fold, (-k * px - py) / 2, py))
    px = px - np.clip(px, -2 * r, 0)
    return -np.hypot(px, py) * np.sign(py)


_SHAPES = {
    "disc": lambda ux, uy: np.hypot(ux, uy) - 1.0,
    "square": lambda ux, uy: _box_sdf(ux, uy, 0.85, 0.85),
    "cross": lambda ux, uy: np.minimum(_box_sdf(ux, uy, 1.0, 0.35), _box_sdf(ux, uy, 0.35, 1.0)),
    "triangle": lambda ux, uy: _triangle_sdf(ux, uy, 1.15),
    "bar": lambda ux, uy: _box_sdf(ux, uy, 1.0, 0.22),
}


_REACH = 1.4  # every shape lies within this many shape units of its centre


def _render(track: _Track):
    """Rasterizes a track in a window around it, frame by frame.

    Returns the covered pixels as index arrays (t, y, x) with their anti-aliased
    coverage, and the displacement (dx, dy) to frame t+1 of every covered pixel,
    following the track's similarity transform (meaningless at the last frame).
    """
    half = int(np.ceil(_REACH * track.scale.max() + 1))
    offsets = np.arange(-half, half + 1, dtype=np.float32)
    xs = np.round(track.cx)[:, None, None] + offsets[None, None, :]
    ys = np.round(track.cy)[:, None, None] + offsets[None, :, None]
    dx, dy = xs - track.cx[:, None, None], ys - track.cy[:, None, None]
    c, s = np.cos(track.angle)[:, None, None], np.sin(track.angle)[:, None, None]
    k = track.scale[:, None, None]
    ux, uy = (c * dx + s * dy) / k, (-s * dx + c * dy) / k
    alpha = np.clip(0.5 - _SHAPES[track.shape](ux, uy) * k, 0, 1)
    inside = (alpha > 0) & (xs >= 0) & (xs < WIDTH) & (ys >= 0) & (ys < HEIGHT)
    t, i, j = np.nonzero(inside)
    u, v = ux[t, i, j], uy[t, i, j]
    x, y = xs[t, 0, j], ys[t, i, 0]
    n = np.minimum(t + 1, track.cx.size - 1)
    c, s, k = np.cos(track.angle[n]), np.sin(track.angle[n]), track.scale[n]
    displacement = np.stack([track.cx[n] + k * (c * u - s * v) - x,
                             track.cy[n] + k * (s * u + c * v) - y], axis=-1)
    return (t, y.astype(int), x.astype(int)), alpha[t, i, j], displacement


# ----------------------------------------------------------------------------- motion

def _fold(x, lo, hi):
    """Position of a point moving freely along x, reflected between lo and hi."""
    span = hi - lo
    m = np.mod(x - lo, 2 * span)
    return lo + span - np.abs(m - span)


def _drift(rng, t, lo, hi, speed):
    """Straight-line motion at `speed` px/s bouncing inside the box [lo, hi]^2."""
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    start = rng.uniform(lo, hi)
    heading = rng.uniform(0, 2 * np.pi)
    v = speed * np.array([np.cos(heading), np.sin(heading)])
    return _fold(start[0] + v[0] * t, lo[0], hi[0]), _fold(start[1] + v[1] * t, lo[1], hi[1])


def _reversing_rate(rng, t, low, high, reversals_per_s=0.15):
    """Angular velocity with a random magnitude and sign flips at Poisson times."""
    dt = t[1] - t[0]
    flips = rng.random(t.size) < reversals_per_s * dt
    sign = rng.choice([-1.0, 1.0]) * np.where(np.cumsum(flips) % 2, -1.0, 1.0)
    return sign * rng.uniform(low, high)


def _crossings(x, t):
    """Times at which x (sampled at t) passes an integer."""
    k = np.floor(x)
    return t[1:][np.diff(k) != 0]


def _motion(kind, rng, t, size):
    """Actor pose on the fine time grid t: (cx, cy, scale, angle, event_times)."""
    r = size
    if kind == "bounce":
        floor_y = HEIGHT - 1 - r
        g = rng.uniform(20, 40)
        height = rng.uniform(15, HEIGHT - 2 - 2 * r)
        period = 2 * np.sqrt(2 * height / g)
        tau = np.mod(t + rng.uniform(0, period), period)
        cy = floor_y - 0.5 * g * tau * (period - tau)
        vx = rng.choice([-1, 1]) * rng.uniform(12, 30)
        # Unfolded x; the floor (tau wraps) and the walls (x folds) are the events.
        free_x = rng.uniform(r, WIDTH - 1 - r) + vx * t
        cx = _fold(free_x, r, WIDTH - 1 - r)
        walls = _crossings((free_x - r) / (WIDTH - 1 - 2 * r), t)
        floors = t[1:][np.diff(tau) < 0]
        return cx, cy, np.full_like(t, r), np.zeros_like(t), np.sort(np.r_[walls, floors])
    if kind == "orbit":
        radius0 = rng.uniform(8, 13)
        radius = radius0 + 3 * np.sin(2 * np.pi * t / rng.uniform(4, 8) + rng.uniform(0, 2 * np.pi))
        pad = radius0 + 3 + r
        mx, my = _drift(rng, t, (pad, pad), (WIDTH - 1 - pad, HEIGHT - 1 - pad), rng.uniform(3, 10))
        phase = (rng.uniform(0, 2 * np.pi)
                 + np.cumsum(_reversing_rate(rng, t, 1.5, 3.0)) * (t[1] - t[0]))
        cx, cy = mx + radius * np.cos(phase), my + radius * np.sin(phase)
        return cx, cy, np.full_like(t, r), np.zeros_like(t), np.zeros(0)
    if kind == "spin":
        cx, cy = _drift(rng, t, (r + 2, r + 2), (WIDTH - 3 - r, HEIGHT - 3 - r), rng.uniform(5, 15))
        angle = (rng.uniform(0, 2 * np.pi)
                 + np.cumsum(_reversing_rate(rng, t, 1.5, 3.5)) * (t[1] - t[0]))
        return cx, cy, np.full_like(t, r), angle, _crossings(angle / (np.pi / 2), t)
    if kind == "pulse":
        big = r * (1 + _PULSE_DEPTH)
        cx, cy = _drift(rng, t, (big, big), (WIDTH - 1 - big, HEIGHT - 1 - big), rng.uniform(3, 10))
        rate = rng.uniform(0.3, 0.6) * (
            1 + 0.5 * np.sin(2 * np.pi * t / 10 + rng.uniform(0, 2 * np.pi)))
        phase = rng.uniform(0, 2 * np.pi) + 2 * np.pi * np.cumsum(rate) * (t[1] - t[0])
        scale = r * (1 + _PULSE_DEPTH * np.sin(phase))
        return cx, cy, scale, np.full_like(t, rng.uniform(0, 2 * np.pi)), np.zeros(0)
    raise ValueError(f"unknown motion {kind!r}")


# ----------------------------------------------------------------------------- sound

def _sound(kind, rng, t, scale, size, events):
    """Clean class sound on the audio time grid t, peak-normalized."""
    if kind == "hum":
        f0 = rng.uniform(90, 180)
        tremolo = 1 + 0.3 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * t + rng.uniform(0, 2 * np.pi))
        wave = sum(a * np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 2 * np.pi))
                   for k, a in enumerate((1.0, 0.5, 0.3, 0.15), start=1))
        wave = wave * tremolo
    elif kind == "beep":
        freq = rng.uniform(1200, 2400)
        wave = np.zeros_like(t)
        n = int(_AUDIO_EVENT_S * SAMPLE_RATE)
        burst = np.sin(2 * np.pi * freq * np.arange(n) / SAMPLE_RATE)
        burst *= np.exp(-np.arange(n) / (0.025 * SAMPLE_RATE))
        for e in np.round(events * SAMPLE_RATE).astype(int):
            seg = wave[e:e + n]
            seg += burst[:seg.size]
    elif kind == "chirp":
        rel = (scale / size - 1) / _PULSE_DEPTH  # -1..1
        freq = rng.uniform(500, 700) + rng.uniform(250, 400) * rel
        wave = np.sin(2 * np.pi * np.cumsum(freq) / SAMPLE_RATE + rng.uniform(0, 2 * np.pi))
    else:
        raise ValueError(f"unknown sound {kind!r}")
    peak = np.abs(wave).max()
    return wave / peak if peak > 0 else wave


# ----------------------------------------------------------------------------- scene

def _background(rng):
    """(H + 2M, W + 2M, 3) float texture: gradient + coarse and fine noise."""
    h, w = HEIGHT + 2 * _CAMERA_MARGIN, WIDTH + 2 * _CAMERA_MARGIN
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    a = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(a) * xs + np.sin(a) * ys)
    ramp = (ramp - ramp.min()) / (ramp.max() - ramp.min())
    c0, c1 = (np.array(colorsys.hsv_to_rgb(rng.random(), rng.uniform(0, 0.6),
                                           rng.uniform(0.2, 0.9)))
              for _ in range(2))
    img = c0 + ramp[..., None] * (c1 - c0)
    cell = int(rng.integers(6, 16))
    coarse = rng.normal(0, 1, (h // cell + 2, w // cell + 2, 3)).astype(np.float32)
    coarse = cv2.resize(coarse, (w + 2 * cell, h + 2 * cell), interpolation=cv2.INTER_CUBIC)
    coarse = coarse[cell:cell + h, cell:cell + w]
    fine = cv2.GaussianBlur(rng.normal(0, 1, (h, w, 3)).astype(np.float32), (3, 3), 0.7)
    img = img + rng.uniform(0.03, 0.1) * coarse + rng.uniform(0.02, 0.08) * fine
    return np.clip(img, 0, 1).astype(np.float32)


def _scene_cuts(rng, t):
    """Scene index of every frame: scenes last 2-3.5 s."""
    ends = np.cumsum(rng.uniform(2.0, 3.5, size=int(t[-1] / 2.0) + 1))
    return np.searchsorted(ends, t, side="right")


def _contrasting_colour(rng, background, hue):
    """A saturated colour near `hue` whose brightness is on the other side of the
    background's."""
    dark = background.mean() > 0.5
    value = rng.uniform(0.1, 0.4) if dark else rng.uniform(0.7, 1.0)
    hue = (hue + rng.uniform(-_HUE_SPREAD, _HUE_SPREAD)) % 1.0
    return np.array(colorsys.hsv_to_rgb(hue, rng.uniform(0.6, 1.0), value))


def _camera(rng, t):
    """Camera offset (ox, oy) per time: slow sinusoidal pan within the margin."""
    out = []
    for _ in range(2):
        amp = rng.uniform(0, _CAMERA_MARGIN - 2)
        out.append(amp * np.sin(2 * np.pi * rng.uniform(0.03, 0.1) * t + rng.uniform(0, 2 * np.pi)))
    return out


def _distractors(rng, t, camera, scene):
    """2-4 thin bars drifting and turning across the frame, partly leaving it; their
    colours change with the scene."""
    tracks = []
    for _ in range(int(rng.integers(2, 5))):
        cx, cy = _drift(rng, t, (-6, -6), (WIDTH + 5, HEIGHT + 5), rng.uniform(5, 20))
        angle = rng.uniform(0, 2 * np.pi) + rng.uniform(-1, 1) * t
        colour = np.array([colorsys.hsv_to_rgb(rng.random(), rng.uniform(0, 0.8),
                                               rng.uniform(0.1, 1))
                           for _ in range(scene[-1] + 1)])[scene]
        tracks.append(_Track("bar", colour, cx - camera[0], cy - camera[1],
                             np.full_like(t, rng.uniform(3, 7)), angle))
    return tracks


def generate_video(class_id: int, rng: np.random.Generator, *,
                   num_frames: int = NUM_FRAMES) -> DemoVideo:
    """Renders one video of class `class_id` (see the module docstring)."""
    if not 0 <= class_id < len(CLASSES):
        raise ValueError(f"class_id {class_id} out of range; expected 0..{len(CLASSES) - 1}")
    if num_frames < 2:
        raise ValueError(f"num_frames={num_frames}; expected at least 2 (flow needs frame pairs)")
    shape, motion, sound = CLASSES[class_id]
    # One stream per factor: classes that share a factor value share its draws.
    scene_rng, look_rng, motion_rng, sound_rng = rng.spawn(4)
    num_samples = int(round(num_frames / FPS * SAMPLE_RATE))
    t_audio = np.arange(num_samples) / SAMPLE_RATE
    frame_idx = np.round(np.arange(num_frames) / FPS * SAMPLE_RATE).astype(int)
    t = t_audio[frame_idx]

    scene = _scene_cuts(scene_rng, t)
    backgrounds = [_background(scene_rng) for _ in range(scene[-1] + 1)]
    camera = _camera(scene_rng, t)
    tracks = _distractors(scene_rng, t, camera, scene)
    size = look_rng.uniform(8, 12)
    colour = np.stack([_contrasting_colour(look_rng, b, SHAPE_HUES[shape])
                       for b in backgrounds])[scene]
    cx, cy, scale, angle, events = _motion(motion, motion_rng, t_audio, size)
    tracks.append(_Track(shape, colour, cx[frame_idx] - camera[0], cy[frame_idx] - camera[1],
                         scale[frame_idx], angle[frame_idx]))

    images = np.empty((num_frames, HEIGHT, WIDTH, 3), np.float32)
    for i in range(num_frames):
        shift = np.float32([[1, 0, _CAMERA_MARGIN + camera[0][i]],
                            [0, 1, _CAMERA_MARGIN + camera[1][i]]])
        images[i] = cv2.warpAffine(backgrounds[scene[i]], shift, (WIDTH, HEIGHT),
                                   flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
    # Background content moves opposite to the camera.
    flow = np.empty((num_frames - 1, HEIGHT, WIDTH, 2), np.float32)
    flow[..., 0] = -np.diff(camera[0])[:, None, None]
    flow[..., 1] = -np.diff(camera[1])[:, None, None]
    for track in tracks:  # back to front; the actor is last
        pixels, alpha, displacement = _render(track)
        colour = np.broadcast_to(track.colour, (num_frames, 3))[pixels[0]]
        images[pixels] += alpha[:, None] * (colour - images[pixels])
        owned = alpha > 0.5
        last = pixels[0] == num_frames - 1
        flow[tuple(p[owned & ~last] for p in pixels)] = displacement[owned & ~last]
    actor_mask = np.zeros((num_frames, HEIGHT, WIDTH), bool)
    actor_mask[tuple(p[owned] for p in pixels)] = True  # the actor was drawn last, on top
    frames = np.round(np.clip(images, 0, 1) * 255).astype(np.uint8)

    clean = _sound(sound, sound_rng, t_audio, scale, size, events)
    gain = sound_rng.uniform(0.3, 0.7)
    noise = sound_rng.uniform(0.005, 0.08) * sound_rng.standard_normal(num_samples)
    audio = gain * clean + noise
    return DemoVideo(class_id, frames, flow.astype(np.float32),
                     np.clip(audio, -1, 1).astype(np.float32), actor_mask, scene)
