"""Spoofs of a live face: a flat print, a print bent on a cylinder, and a screen showing the face.

Each spoof carries a "photo" of its live mesh, rendered here (face_raster: perspective camera on +Z,
one directional light, Lambert, vertex colours, a plain background) at a scale that makes the face
about life-size on the sheet, and is a textured mesh in the live face's frame: metres, up +Y, facing
+Z, the printed face centre at the origin (where the live face's bounding-box centre is), so one
camera rig frames both. A slight random tilt about the origin imitates a hand-held attack.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .face_live import LiveMesh
from .face_raster import look_at_front, shade_lambert

PRINT_HEIGHT_PX = 512          # photo rows on a print; columns follow the sheet's aspect
SCREEN_PIXEL_TEXELS = 3        # texels per display pixel: room for the dark gap between pixels
SUPERSAMPLE = 2                # photo anti-aliasing (box filter over 2x2 samples)

PHOTO_DISTANCE = (0.4, 0.9)    # m, camera to face
LIGHT_AZIMUTH = (-45.0, 45.0)  # deg about +Y from the camera direction
LIGHT_ELEVATION = (-10.0, 45.0)
AMBIENT = (0.25, 0.5)
TILT_DEG = {"yaw": 8.0, "pitch": 8.0, "roll": 4.0}   # uniform in +- these
PRINT_SCALE = (0.85, 1.1)      # printed face size / live face size
SHEET_WIDTH = (0.17, 0.23)     # m; A4 is 0.210 x 0.297
SHEET_ASPECT = (1.3, 1.45)     # height / width
MARGIN = (0.0, 0.015)          # m of blank paper around the photo
CURVE_RADIUS = (0.1, 0.3)      # m
SCREEN_WIDTH = (0.13, 0.20)    # m of active area (tablets)
SCREEN_ASPECTS = (4 / 3, 1.6)  # height / width, portrait
SCREEN_ROWS = (300, 400)       # display pixel rows
BEZEL = (0.006, 0.016)         # m
SCREEN_DEPTH = (0.006, 0.010)  # m, device thickness
NOMINAL_FACE_HEIGHT = 0.25     # m, a live mesh's typical height (anny faces here: 0.22-0.30)


@dataclass
class TexturedMesh:
    vertices: np.ndarray   # [N, 3] metres
    faces: np.ndarray      # [F, 3]
    uv: np.ndarray         # [N, 2], OBJ convention (v = 0 at the image's bottom row)
    texture: np.ndarray | None  # [H, W, 3] uint8, row 0 at the top (None: geometry only)


# ------------------------------------------------------------------------------------------- photo

def sample_photo(rng: np.random.Generator) -> dict:
    """How the attacker's photo of the face was taken: distance, light, ambient share, background."""
    hue = rng.uniform(0, 1)
    sat, val = rng.uniform(0.05, 0.35), rng.uniform(0.3, 0.9)
    return {"distance": round(float(rng.uniform(*PHOTO_DISTANCE)), 6),
            "light_azimuth_deg": round(float(rng.uniform(*LIGHT_AZIMUTH)), 6),
            "light_elevation_deg": round(float(rng.uniform(*LIGHT_ELEVATION)), 6),
            "ambient": round(float(rng.uniform(*AMBIENT)), 6),
            "background": [round(float(c), 6) for c in _hsv_to_rgb(hue, sat, val)],
            "background_falloff": round(float(rng.uniform(0.0, 0.2)), 6)}


def light_direction(photo: dict) -> np.ndarray:
    """Unit vector towards the light: from +Z (the camera) turned by azimuth about Y, raised by elevation."""
    az, el = np.radians(photo["light_azimuth_deg"]), np.radians(photo["light_elevation_deg"])
    return np.array([np.sin(az) * np.cos(el), np.sin(el), np.cos(az) * np.cos(el)])


def render_photo(live: LiveMesh, photo: dict, size: tuple[int, int], extent: tuple[float, float],
                 scale: float) -> np.ndarray:
    """RGB float [H, W, 3] photo of ``live`` framed so that the image covers ``extent`` = (width, height)
    metres of the sheet and the face's z = 0 section appears ``scale`` times life-size, centred.

    A point at (X, Y, 0) lands at (scale X, scale Y) on the sheet: the focal length in pixels is
    scale * distance * pixels / extent."""
    H, W = size
    s = SUPERSAMPLE
    D = photo["distance"]
    K = np.array([[scale * D * W * s / extent[0], 0, W * s / 2], [0, scale * D * H * s / extent[1], H * s / 2],
                  [0, 0, 1.0]])
    R, t = look_at_front(D)
    bg = np.array(photo["background"])
    img, frags = shade_lambert(live.vertices, live.faces, live.colors, K, R, t, (H * s, W * s),
                               light_direction(photo), photo["ambient"], bg)
    # A soft vignette on the background only, as a wall lit unevenly.
    yy, xx = np.mgrid[0:H * s, 0:W * s]
    r = np.hypot((xx + 0.5) / (W * s) - 0.5, (yy + 0.5) / (H * s) - 0.5) / 0.7071
    img[~frags.mask] *= (1 - photo["background_falloff"] * r[~frags.mask] ** 2)[:, None]
    return img.reshape(H, s, W, s, 3).mean(axis=(1, 3))


# ------------------------------------------------------------------------------------------- prints

def sample_tilt(rng: np.random.Generator) -> dict:
    return {k: round(float(rng.uniform(-a, a)), 6) for k, a in TILT_DEG.items()}


def tilt_matrix(tilt: dict) -> np.ndarray:
    """R = Ry(yaw) Rx(pitch) Rz(roll), applied about the origin (the printed face stays put)."""
    y, p, r = (np.radians(tilt[k]) for k in ("yaw", "pitch", "roll"))
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return ry @ rx @ rz


def sample_print(rng: np.random.Generator, curved: bool) -> dict:
    """A print: sheet size, margin, face scale, colour reproduction, tilt and (curved) the bend."""
    width = float(rng.uniform(*SHEET_WIDTH))
    params = {"sheet_width": round(width, 6), "sheet_height": round(width * float(rng.uniform(*SHEET_ASPECT)), 6),
              "margin": round(float(rng.uniform(*MARGIN)), 6), "face_scale": round(float(rng.uniform(*PRINT_SCALE)), 6),
              "saturation": round(float(rng.uniform(0.7, 0.95)), 6), "gamma": round(float(rng.uniform(0.9, 1.15)), 6),
              "black_level": round(float(rng.uniform(0.03, 0.08)), 6),
              "paper": [round(float(c), 6) for c in rng.uniform(0.9, 0.97) * (1 + rng.normal(0, 0.01, 3))],
              "grain": round(float(rng.uniform(0.005, 0.02)), 6), "grain_seed": int(rng.integers(2**31)),
              "photo": sample_photo(rng), "tilt": sample_tilt(rng)}
    if curved:
        params["radius"] = round(float(rng.uniform(*CURVE_RADIUS)), 6)
        params["bend"] = "convex" if rng.random() < 0.7 else "concave"  # convex: the centre bulges to the camera
    return params


def print_texture(live: LiveMesh, p: dict) -> np.ndarray:
    """The sheet's image: the photo through a print's colour reproduction (lower saturation, a gamma,
    ink that never reaches black, the paper's white and grain), with a blank paper margin."""
    H = PRINT_HEIGHT_PX
    W = int(round(H * p["sheet_width"] / p["sheet_height"]))
    img = render_photo(live, p["photo"], (H, W), (p["sheet_width"], p["sheet_height"]), p["face_scale"])
    grey = img.mean(-1, keepdims=True)
    img = np.clip(grey + p["saturation"] * (img - grey), 0, 1) ** p["gamma"]
    paper = np.array(p["paper"])
    img = paper * (p["black_level"] + (1 - p["black_level"]) * img)
    mx = int(round(p["margin"] / p["sheet_width"] * W))
    my = int(round(p["margin"] / p["sheet_height"] * H))
    if mx or my:
        inner = np.zeros((H, W), dtype=bool)
        inner[my:H - my, mx:W - mx] = True
        img[~inner] = paper
    img = img * (1 + p["grain"] * np.random.default_rng(p["grain_seed"]).standard_normal((H, W, 1)))
    return _to_uint8(img)


def sheet_grid(width: float, height: float, nx: int, ny: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A flat (nx x ny)-cell grid centred at the origin in the z = 0 plane: sheet coordinates [N, 2],
    UVs [N, 2] and triangles."""
    xs, ys = np.linspace(-width / 2, width / 2, nx + 1), np.linspace(-height / 2, height / 2, ny + 1)
    gx, gy = np.meshgrid(xs, ys)
    xy = np.stack([gx.ravel(), gy.ravel()], 1)
    uv = np.stack([(xy[:, 0] + width / 2) / width, (xy[:, 1] + height / 2) / height], 1)
    i, j = np.meshgrid(np.arange(nx), np.arange(ny))
    a = (j * (nx + 1) + i).ravel()
    b, c, d = a + 1, a + nx + 1, a + nx + 2
    faces = np.concatenate([np.stack([a, b, d], 1), np.stack([a, d, c], 1)])  # counter-clockwise seen from +Z
    return xy, uv, faces


def bend(xy: np.ndarray, radius: float | None, convex: bool = True) -> np.ndarray:
    """Sheet coordinates -> 3D: flat at z = 0, or wrapped without stretching on a cylinder of ``radius``
    about a vertical axis at z = -radius (convex) or z = +radius (concave); the sheet centre stays at
    the origin."""
    if radius is None:
        return np.stack([xy[:, 0], xy[:, 1], np.zeros(len(xy))], 1)
    theta = xy[:, 0] / radius
    sign = 1.0 if convex else -1.0
    return np.stack([radius * np.sin(theta), xy[:, 1], sign * radius * (np.cos(theta) - 1.0)], 1)


def print_mesh(p: dict, live: LiveMesh | None = None) -> tuple[TexturedMesh, dict]:
    """A flat or bent print, and the derived geometry the index records (the plane's normal or the
    cylinder's axis after the tilt). The texture is rendered only when ``live`` is given: the geometry
    follows from the parameters alone, so a resumed build can index finished meshes without anny."""
    curved = "radius" in p
    xy, uv, faces = sheet_grid(p["sheet_width"], p["sheet_height"], 64 if curved else 4, 4)
    v = bend(xy, p.get("radius"), p.get("bend", "convex") == "convex")
    rot = tilt_matrix(p["tilt"])
    v = v @ rot.T
    geometry = {"rotation": _round(rot)}
    if curved:
        sign = 1.0 if p["bend"] == "convex" else -1.0
        geometry.update(axis_point=_round(rot @ np.array([0.0, 0.0, -sign * p["radius"]])),
                        axis_direction=_round(rot @ np.array([0.0, 1.0, 0.0])))
    else:
        geometry.update(plane_normal=_round(rot @ np.array([0.0, 0.0, 1.0])), plane_point=[0.0, 0.0, 0.0])
    return TexturedMesh(v, faces, uv, None if live is None else print_texture(live, p)), geometry


# ------------------------------------------------------------------------------------------- screen

def sample_screen(rng: np.random.Generator) -> dict:
    """A tablet replaying the photo: active area, bezel, pixel grid, display colour, face scale (at most
    what fits a nominal face into 90% of the screen height: a tall face may reach the edges), tilt."""
    width = float(rng.uniform(*SCREEN_WIDTH))
    height = width * float(rng.choice(SCREEN_ASPECTS))
    scale = min(float(rng.uniform(0.6, 1.0)), 0.9 * height / NOMINAL_FACE_HEIGHT)
    return {"active_width": round(width, 6), "active_height": round(height, 6),
            "rows": int(rng.integers(SCREEN_ROWS[0], SCREEN_ROWS[1] + 1)),
            "bezel": round(float(rng.uniform(*BEZEL)), 6), "depth": round(float(rng.uniform(*SCREEN_DEPTH)), 6),
            "bezel_grey": round(float(rng.uniform(0.02, 0.08)), 6), "face_scale": round(scale, 6),
            "grid_darkness": round(float(rng.uniform(0.08, 0.2)), 6),
            "brightness": round(float(rng.uniform(0.85, 1.05)), 6),
            "colour_temperature": round(float(rng.uniform(-0.03, 0.06)), 6),
            "gamma": round(float(rng.uniform(0.9, 1.1)), 6),
            "photo": sample_photo(rng), "tilt": sample_tilt(rng)}


def screen_layout(p: dict) -> tuple[int, int, int]:
    """Display pixel rows and columns, and the bezel width in texels."""
    rows = p["rows"]
    cols = int(round(rows * p["active_width"] / p["active_height"]))
    return rows, cols, int(round(p["bezel"] / p["active_width"] * cols * SCREEN_PIXEL_TEXELS))


def screen_texture(live: LiveMesh, p: dict) -> np.ndarray:
    """The device front as one image: the photo at display resolution, each display pixel drawn as a
    SCREEN_PIXEL_TEXELS-square cell whose last row and column are darker (the faint grid between
    pixels that makes moire under a camera), a blue-ish display tint, inside a dark bezel."""
    rows, cols, bezel = screen_layout(p)
    img = render_photo(live, p["photo"], (rows, cols), (p["active_width"], p["active_height"]), p["face_scale"])
    img = np.clip(img, 0, 1) ** p["gamma"] * p["brightness"]
    img = img * (1 + p["colour_temperature"] * np.array([-1.0, 0.0, 1.0]))
    k = SCREEN_PIXEL_TEXELS
    img = np.repeat(np.repeat(img, k, axis=0), k, axis=1)
    cell = np.ones((k, k))
    cell[-1, :] = cell[:, -1] = 1 - p["grid_darkness"]
    img = img * np.tile(cell, (rows, cols))[..., None]
    out = np.full((rows * k + 2 * bezel, cols * k + 2 * bezel, 3), p["bezel_grey"])
    out[bezel:bezel + rows * k, bezel:bezel + cols * k] = img
    return _to_uint8(out)


def screen_mesh(p: dict, live: LiveMesh | None = None) -> tuple[TexturedMesh, dict]:
    """A thin box: its front (z = 0, before the tilt) is the textured display and bezel, the active
    area centred at the origin; sides and back take the bezel's colour (their UVs sit in the bezel).
    The texture is rendered only when ``live`` is given."""
    rows, cols, bezel_px = screen_layout(p)
    th, tw = rows * SCREEN_PIXEL_TEXELS + 2 * bezel_px, cols * SCREEN_PIXEL_TEXELS + 2 * bezel_px
    # The bezel in metres as drawn: texel-rounded, so the active area's edges fall on texel borders.
    w_full = p["active_width"] * tw / (tw - 2 * bezel_px)
    h_full = p["active_height"] * th / (th - 2 * bezel_px)
    x0, x1, y0, y1, zb = -w_full / 2, w_full / 2, -h_full / 2, h_full / 2, -p["depth"]
    corners_front = np.array([[x0, y0, 0], [x1, y0, 0], [x1, y1, 0], [x0, y1, 0]])
    corners_back = corners_front + np.array([0.0, 0.0, zb])
    verts = [corners_front, corners_back[::-1]]          # back quad wound to face -Z
    uvs = [np.array([[0, 0], [1, 0], [1, 1], [0, 1]], float), np.tile(_bezel_uv(bezel_px, tw, th), (4, 1))]
    for i in range(4):                                   # sides, each wound to face outwards
        a, b = corners_front[i], corners_front[(i + 1) % 4]
        verts.append(np.stack([a + [0, 0, zb], b + [0, 0, zb], b, a]))
        uvs.append(np.tile(_bezel_uv(bezel_px, tw, th), (4, 1)))
    v = np.concatenate(verts)
    faces = np.concatenate([np.array([[0, 1, 2], [0, 2, 3]]) + 4 * q for q in range(6)])
    rot = tilt_matrix(p["tilt"])
    geometry = {"rotation": _round(rot), "plane_normal": _round(rot @ np.array([0.0, 0.0, 1.0])),
                "plane_point": [0.0, 0.0, 0.0], "front_faces": 2}
    texture = None if live is None else screen_texture(live, p)
    return TexturedMesh(v @ rot.T, faces, np.concatenate(uvs), texture), geometry


def _bezel_uv(bezel_px: int, tw: int, th: int) -> np.ndarray:
    """A UV in the middle of the bottom-left bezel corner."""
    return np.array([(bezel_px / 2) / tw, (bezel_px / 2) / th]) if bezel_px else np.array([0.0, 0.0])


# ------------------------------------------------------------------------------------------- helpers

def _to_uint8(img: np.ndarray) -> np.ndarray:
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _round(x: np.ndarray) -> list:
    return np.round(np.asarray(x, dtype=np.float64), 9).tolist()


def _hsv_to_rgb(h: float, s: float, v: float) -> tuple[float, float, float]:
    import colorsys
    return colorsys.hsv_to_rgb(h, s, v)
