"""Numpy rendering of A2O-Synth clips from a :class:`~a2o.data.synth.spec.WorldSpec`.

Why it looks like this: the benchmark must reward *choosing the right object classes*. In every
clip the agent (the hand) moves one object along the action's motion pattern, while several other
objects of the world stand or drift, among them objects of other actions that share the motion.
So the motion alone does not name the action: which object moves does. Colours are blended toward
the background (``contrast``), so at low resolution RGB shows faint shapes, whereas a likelihood
map of the right object makes its motion plain.

Rendering keeps a per-pixel label map next to the RGB frame, so every mask is exactly the set of
pixels where that object is visible (the top-most layer wins), and the region's mask is the part of
the background not covered by any object. Sizes and motion amplitudes are given at 64 px and scale
with the frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from a2o.data.synth.spec import WorldSpec

__all__ = ["ScenePlan", "RenderedClip", "render_clip", "motion_tracks"]


@dataclass(frozen=True)
class ScenePlan:
    """What the planner decided for one clip; everything else is drawn from ``seed``."""

    video_id: str
    action: str
    background: str
    others: tuple[str, ...]
    seed: int


@dataclass(frozen=True)
class RenderedClip:
    frames: np.ndarray  # (T, H, W, 3) uint8
    masks: dict[str, np.ndarray]  # name -> (T, H, W) uint8 {0, 1}, only names present in the clip


def _smooth(u: np.ndarray) -> np.ndarray:
    u = np.clip(u, 0.0, 1.0)
    return u * u * (3.0 - 2.0 * u)


# --------------------------------------------------------------------------------------------
# motions


def motion_tracks(
    motion: str,
    rng: np.random.Generator,
    s: np.ndarray,
    k: float,
    target_half: tuple[float, float],
    agent_half: tuple[float, float],
) -> tuple[np.ndarray, np.ndarray]:
    """(target track, hand track), each (T, 2) as (y, x) relative to the target's start.

    ``s`` runs 0 → 1 over the clip; amplitudes are in 64-px units times ``k``. Holding motions
    (circle … stroke) keep the hand on the object's lower end after a short approach; the others
    (push, lift, drop, roll, pass) are contact motions where hand and object part.
    """
    side = int(rng.choice([-1, 1]))
    zeros = np.zeros_like(s)
    grip = target_half[0] * k * 0.8 + agent_half[0] * k * 0.5  # hand centre below the object's centre
    contact_x = (target_half[1] + agent_half[1]) * k + 0.5
    contact_y = (target_half[0] + agent_half[0]) * k + 0.5
    gap = 6.0 * k
    u = _smooth((s - 0.15) / 0.85)  # progress after the hand has reached the object
    approach = 1.0 - _smooth(s / 0.15)
    if motion in ("circle", "sweep", "scrub", "chop", "stroke", "pour"):
        if motion == "circle":  # stirring-like: one and a quarter turns
            theta = 2.0 * np.pi * 1.25 * u
            obj = np.stack([-6.0 * k * np.sin(theta), side * 6.0 * k * (1.0 - np.cos(theta))], 1)
        elif motion == "sweep":  # wide, slow side to side
            obj = np.stack([zeros, side * 12.0 * k * np.sin(2.0 * np.pi * u)], 1)
        elif motion == "scrub":  # short, fast side to side
            obj = np.stack([zeros, side * 4.0 * k * np.sin(2.0 * np.pi * 3.0 * u)], 1)
        elif motion == "chop":  # repeated up and down strokes from the start point
            obj = np.stack([-8.0 * k * 0.5 * (1.0 - np.cos(2.0 * np.pi * 2.0 * u)), zeros], 1)
        elif motion == "stroke":  # one long up-and-down stroke through the start point
            obj = np.stack([-10.0 * k * np.sin(2.0 * np.pi * u), zeros], 1)
        else:  # pour: raise, then swing to the side and hold
            obj = np.stack([-8.0 * k * _smooth(u / 0.4), side * 10.0 * k * _smooth((u - 0.4) / 0.6)], 1)
        hand = obj + np.stack([grip + gap * approach, zeros], 1)
        return obj, hand
    if motion in ("push_left", "push_right"):  # hand comes from the far side, both slide along
        direction = -1 if motion == "push_left" else 1
        carry = direction * 18.0 * k * _smooth((s - 0.3) / 0.7)
        near = 1.0 - _smooth(s / 0.3)
        obj = np.stack([zeros, carry], 1)
        hand = np.stack([zeros, carry - direction * (contact_x + gap * near)], 1)
    elif motion == "lift":  # hand comes from below, then hand and object rise together
        rise = -16.0 * k * _smooth((s - 0.3) / 0.7)
        near = 1.0 - _smooth(s / 0.3)
        obj = np.stack([rise, zeros], 1)
        hand = np.stack([rise + contact_y + gap * near, zeros], 1)
    elif motion == "drop":  # held at the side, released, falls; the hand backs off
        fall = np.clip((s - 0.35) / 0.65, 0.0, 1.0)
        obj = np.stack([20.0 * k * fall**2, zeros], 1)
        hand = np.stack([-3.0 * k * _smooth(fall * 3.0), side * (contact_x + 2.0 * k * fall)], 1)
    elif motion == "roll":  # a flick of the hand, then the object rolls on alone, slowing down
        v = np.clip((s - 0.25) / 0.75, 0.0, 1.0)
        flick = _smooth(s / 0.25) - 0.6 * _smooth((s - 0.25) / 0.3)
        obj = np.stack([zeros, side * 22.0 * k * v * (2.0 - v)], 1)
        hand = np.stack([zeros, -side * (contact_x + 3.0 * k * (1.0 - flick))], 1)
    elif motion == "pass":  # the object leaves the still hand in an arc
        v = np.clip((s - 0.2) / 0.8, 0.0, 1.0)
        obj = np.stack([-10.0 * k * 4.0 * v * (1.0 - v), side * 20.0 * k * v], 1)
        toss = 2.0 * k * (_smooth(s / 0.2) - _smooth((s - 0.2) / 0.4))
        hand = np.stack([zeros, -side * contact_x + side * toss], 1)
    else:  # pragma: no cover - the spec validates motions
        raise AssertionError(motion)
    return obj, hand


# --------------------------------------------------------------------------------------------
# shapes


def _shape_parts(shape: str, dy: np.ndarray, dx: np.ndarray, hy: float, hx: float) -> list[tuple[np.ndarray, float]]:
    """(mask, brightness delta) parts of a shape; ``dy, dx`` are pixel offsets from its centre."""
    u, v = dy / hy, dx / hx  # normalised: the shape fills [-1, 1] x [-1, 1]

    def rect(u0: float, u1: float, v0: float, v1: float) -> np.ndarray:
        return (u >= u0) & (u < u1) & (v >= v0) & (v < v1)

    def oval(cu: float, cv: float, ru: float, rv: float) -> np.ndarray:
        return ((u - cu) / ru) ** 2 + ((v - cv) / rv) ** 2 <= 1.0

    if shape == "disc":
        return [(oval(0, 0, 1, 1), 0.0), (oval(-0.35, -0.35, 0.3, 0.3), 45.0)]
    if shape == "ellipse":
        return [(oval(0, 0, 1, 1), 0.0)]
    if shape == "box":
        return [(rect(-1, 1, -1, 1), -25.0), (rect(-0.65, 0.65, -0.65, 0.65), 0.0)]
    if shape == "block":
        return [(rect(-1, 1, -1, 1), 0.0)]
    if shape == "ring":
        return [(oval(0, 0, 1, 1) & ~oval(0, 0, 0.5, 0.5), 0.0)]
    if shape == "paddle":  # spoon: thin handle, oval bowl on top
        return [(rect(-0.2, 1, -0.25, 0.25), -15.0), (oval(-0.55, 0, 0.45, 1.0), 0.0)]
    if shape == "balloon":  # whisk: handle, open wire loop on top
        loop = oval(-0.3, 0, 0.7, 1.0) & ~oval(-0.3, 0, 0.4, 0.55)
        return [(rect(0.35, 1, -0.3, 0.3), -25.0), (loop, 0.0)]
    if shape == "tee":  # mop, hammer: handle with a crossbar on top
        return [(rect(-0.6, 1, -0.22, 0.22), -20.0), (rect(-1, -0.6, -1, 1), 0.0)]
    if shape == "blade":  # knife: dark handle below, long light blade above
        return [(rect(0.35, 1, -0.5, 0.5), -45.0), (rect(-1, 0.35, -0.5, 0.6) & (v < 0.6 - 0.3 * (u + 1)), 25.0)]
    if shape == "brush":  # broom, toothbrush: handle, striped bristle block on top
        bristles = rect(-1, -0.45, -1, 1)
        stripes = bristles & (np.mod(np.floor((v + 1) * 3.0), 2) == 0)
        return [(rect(-0.45, 1, -0.2, 0.2), -20.0), (bristles, 0.0), (stripes, -30.0)]
    if shape == "kettle":  # body, a spout to the side, a knob on the lid
        body = rect(-0.45, 1, -0.7, 0.5)
        spout = rect(-0.2, 0.25, 0.5, 1.0)
        return [(body, 0.0), (spout, -20.0), (rect(-0.8, -0.45, -0.2, 0.1), -35.0)]
    if shape == "cup":  # body with a side handle
        handle = rect(-0.5, 0.4, 0.55, 1.0) & ~rect(-0.2, 0.1, 0.55, 0.8)
        return [(rect(-1, 1, -1, 0.55), 0.0), (handle, -20.0)]
    if shape == "comb":  # a spine with teeth below
        teeth = rect(-0.4, 1, -1, 1) & (np.mod(np.floor((v + 1) * 4.0), 2) == 0)
        return [(rect(-1, -0.4, -1, 1), 0.0), (teeth, -15.0)]
    if shape == "bar":  # rolling pin: a long bar with darker grips at both ends
        return [(rect(-1, 1, -0.6, 0.6), 0.0), (rect(-0.6, 0.6, -1, -0.6) | rect(-0.6, 0.6, 0.6, 1), -35.0)]
    if shape == "bottle":
        return [(rect(-0.2, 1, -1, 1), 0.0), (rect(-1, -0.2, -0.45, 0.45), -20.0)]
    if shape == "book":
        return [(rect(-1, 1, -1, 1), 0.0), (rect(-1, 1, -1, -0.75), 40.0)]
    if shape == "lamp":
        return [(rect(-0.4, 0.85, -0.2, 0.2) | rect(0.85, 1, -0.7, 0.7), -60.0), (rect(-1, -0.4, -1, 1), 0.0)]
    if shape == "plant":
        return [(rect(0.2, 1, -0.7, 0.7), -60.0), (oval(-0.35, 0, 0.65, 1.0), 0.0)]
    if shape == "chair":
        seat_back = rect(-0.2, 0.15, -1, 1) | rect(-1, 0.15, 0.65, 1)
        return [(seat_back, 0.0), (rect(0.15, 1, -1, -0.7) | rect(0.15, 1, 0.7, 1), -10.0)]
    raise AssertionError(shape)  # pragma: no cover - the spec validates shapes


# --------------------------------------------------------------------------------------------
# regions


def _region_texture(texture: str, colour, rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, k: float):
    """(H, W, 3) float background with a static texture."""
    base = np.array(colour, dtype=np.float64)
    height, width = yy.shape
    noise = rng.normal(size=(height, width, 1))
    if texture == "planks":  # horizontal bands of slightly different tone
        plank = np.floor(yy / (8.0 * k)).astype(int)
        tone = rng.uniform(-8.0, 8.0, size=plank.max() + 1)[plank]
        seam = (np.mod(yy, 8.0 * k) < 1.0) * -18.0
        shade = (tone + seam)[..., None] + 3.0 * noise
    elif texture == "grass":
        shade = 9.0 * noise * np.array([0.5, 1.0, 0.5])
    elif texture == "grain":  # wood grain
        grain = 7.0 * np.sin(0.9 * yy / k + 2.0 * np.sin(0.15 * xx / k + rng.uniform(0, 6.3)))
        shade = grain[..., None] + 2.0 * noise
    elif texture == "tiles":  # grout lines on a square grid
        grout = ((np.mod(yy, 10.0 * k) < 1.0) | (np.mod(xx, 10.0 * k) < 1.0)) * -20.0
        shade = grout[..., None] + 2.0 * noise
    elif texture == "weave":  # a fine checker of two tones
        check = (np.mod(np.floor(yy / (2.0 * k)) + np.floor(xx / (2.0 * k)), 2) * 10.0 - 5.0)
        shade = check[..., None] + 2.0 * noise
    else:  # plain
        shade = 3.0 * noise
    return base + shade


# --------------------------------------------------------------------------------------------
# placement and the clip


def _bbox(track: np.ndarray, half: tuple[float, float]) -> tuple[float, float, float, float]:
    hy, hx = half
    return (
        float(track[:, 0].min() - hy),
        float(track[:, 1].min() - hx),
        float(track[:, 0].max() + hy),
        float(track[:, 1].max() + hx),
    )


def _overlaps(a: tuple[float, ...], b: tuple[float, ...], pad: float) -> bool:
    return not (a[2] + pad < b[0] or b[2] + pad < a[0] or a[3] + pad < b[1] or b[3] + pad < a[1])


def _place_tracks(
    spec: WorldSpec, plan: ScenePlan, rng: np.random.Generator, s: np.ndarray, height: int, width: int, k: float
) -> dict[str, np.ndarray]:
    """Absolute tracks for every object: the action first (whole path in frame), then the others."""
    action = spec.action(plan.action)
    half = {o.name: (o.size[0] * k, o.size[1] * k) for o in spec.objects}
    target_track, hand_track = motion_tracks(
        action.motion, rng, s, k, spec.object(action.object).size, spec.object(spec.agent).size
    )
    tracks = {action.object: target_track, spec.agent: hand_track}
    boxes = [_bbox(t, half[n]) for n, t in tracks.items()]
    y0, x0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
    y1, x1 = max(b[2] for b in boxes), max(b[3] for b in boxes)
    margin = 1.0

    def _offset(lo: float, hi: float, size: int) -> float:
        low, high = margin - lo, size - margin - hi
        return float(rng.uniform(low, high)) if high > low else (size - lo - hi) / 2.0

    offset = np.array([_offset(y0, y1, height), _offset(x0, x1, width)])
    tracks = {n: t + offset for n, t in tracks.items()}
    occupied = [_bbox(t, half[n]) for n, t in tracks.items()]
    for name in plan.others:
        hy, hx = half[name]
        drift = rng.normal(size=2)
        drift *= rng.uniform(0.0, spec.drift * k) / max(float(np.linalg.norm(drift)), 1e-6)
        for _attempt in range(60):  # rejection sampling; a crowded small frame may end up overlapping
            start = np.array(
                [
                    rng.uniform(hy + margin, max(hy + margin, height - hy - margin)),
                    rng.uniform(hx + margin, max(hx + margin, width - hx - margin)),
                ]
            )
            track = start + s[:, None] * drift
            if not any(_overlaps(_bbox(track, (hy, hx)), b, k) for b in occupied):
                break
        tracks[name] = track
        occupied.append(_bbox(track, (hy, hx)))
    return tracks


def render_clip(spec: WorldSpec, plan: ScenePlan) -> RenderedClip:
    """Render one clip and its visible-pixel masks; every random choice comes from ``plan.seed``."""
    rng = np.random.default_rng(plan.seed)
    height, width = spec.resolution
    num_frames = spec.num_frames
    k = max(min(height, width) / 64.0, 0.6)  # object scale; never below ~4 px objects
    s = np.linspace(0.0, 1.0, num_frames)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64) + 0.5
    region = spec.region(plan.background)
    background = _region_texture(region.texture, region.colour, rng, yy, xx, k)
    tracks = _place_tracks(spec, plan, rng, s, height, width, k)
    target = spec.action(plan.action).object
    order = [*plan.others, target, spec.agent]  # back to front: the hand on top
    region_colour = np.array(region.colour, dtype=np.float64)
    gain = rng.uniform(0.9, 1.1)  # per-clip lighting, so absolute colour is a weaker cue
    frames = np.empty((num_frames, height, width, 3), np.uint8)
    labels = np.zeros((num_frames, height, width), np.int16)
    for t in range(num_frames):
        frame = background.copy()
        label = labels[t]
        for layer, name in enumerate(order, start=1):
            obj = spec.object(name)
            cy, cx = tracks[name][t]
            hy, hx = obj.size[0] * k, obj.size[1] * k
            for mask, delta in _shape_parts(obj.shape, yy - cy, xx - cx, hy, hx):
                colour = np.array(obj.colour) + delta
                frame[mask] = region_colour + spec.contrast * (colour - region_colour)
                label[mask] = layer
        frames[t] = np.clip(frame * gain, 0, 255).astype(np.uint8)
    names = [plan.background, *order]
    masks = {name: (labels == layer).astype(np.uint8) for layer, name in enumerate(names)}
    return RenderedClip(frames=frames, masks=masks)
