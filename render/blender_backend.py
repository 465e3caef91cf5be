"""The Blender backend: the only module that imports ``bpy``.

One ``BlenderRenderer`` per process. ``set_scene(spec)`` brings Blender's scene to a spec by changing
only what differs from the previous one (object transforms, meshes, materials, lights), so a partition
whose samples share geometry reuses it; Cycles' persistent data then keeps its BVH between views.
``render(spec)`` renders every view into one multilayer EXR each (beauty, z-depth, object index and a
geometric-normal AOV) and returns numpy arrays.

A ``MeshSceneSpec`` (mesh mode, docs/meshes.md) is built the same way: the user's mesh becomes one
object from trimesh's arrays (never a Blender importer), its texture a generated image, its colours a
corner colour attribute; samples of a partition share it and change only lights and cameras. A
``TransparentSceneSpec`` (docs/transparent.md) becomes the meshes of ``render.transparent.scene_parts``:
objects keep their meshes while a partition's samples move them, and its transmissive materials are Glass
or Principled BSDFs (plus a Volume Absorption); its paths may cross ``max_bounces`` glass surfaces.
Switching between kinds of spec starts from an empty scene.

Blender facts this relies on (bpy 5.0, measured): the Depth pass is
camera-plane z from the first sample (background 1e10); Object Index likewise; both, and the normal AOV,
are those of the first surface a camera ray hits even where it is glass or transmissive plastic (Cycles
skips only Transparent BSDFs there; tests/test_render_transparent.py checks it against a ray cast); pixels
are not readable from ``Render Result`` in background mode, hence the EXR round trip; bpy is used from
the main thread only.
"""
from __future__ import annotations

import contextlib
import math
import os
import sys
import tempfile
import time

import bpy  # noqa: F401  (the one place it is imported)
import numpy as np
import OpenEXR

from . import camera as cam
from . import meshes
from . import transparent
from .files import ViewPixels
from .geometry import ROOM_UIDS, Mesh, room_meshes, shape_mesh
from .spec import (Light, Material, MeshAsset, MeshSceneSpec, RenderSettings, SceneSpec, Shape, Transmissive,
                   TransparentSceneSpec)

NORMAL_AOV = "gnormal"
BACKGROUND_Z = 1e9  # Blender writes 1e10 where a ray leaves the scene
CLIP = (1e-3, 100.0)  # camera clip range of procedural scenes (scene units)
COLOR_ATTRIBUTE = "Col"  # a mesh's corner colours
UV_MAP = "UVMap"
TRANSPARENT_GLOSSY_BOUNCES = 2  # glass seen in glass
SHADOW_TRANSMITTANCE = 0.8  # share of direct light a transparent object lets through to what it shadows


class BlenderRenderer:
    def __init__(self, settings: RenderSettings, workdir: str | None = None):
        self.settings = settings
        self._tmp = tempfile.TemporaryDirectory(prefix="attrspace-bpy-", dir=workdir)
        self.render_seconds = 0.0  # time inside Cycles' own render call
        self._spec: SceneSpec | None = None
        self._objects_changed = True  # meshes were added or removed since the last render
        self._objects: dict[int, bpy.types.Object] = {}  # shape uid -> object
        self._mesh_keys: dict[int, tuple] = {}
        self._room_key = None
        self._room_objects: list = []
        self._materials: list[bpy.types.Material] = []
        self._material_specs: list[Material] = []
        self._glass = None
        self._lights: list = []
        self._mesh_asset: MeshAsset | None = None  # the user mesh in the scene (mesh mode)
        self._mesh_data: list = []  # its materials and images, removed with it
        self._transmissive: dict = {}  # Transmissive -> material (transparent scenes)
        self._setup()

    # ------------------------------------------------------------------------------------ setup
    def _setup(self) -> None:
        bpy.ops.wm.read_factory_settings(use_empty=True)
        s, scene = self.settings, bpy.context.scene
        scene.render.engine = "CYCLES"
        cy = scene.cycles
        cy.device = "CPU"
        cy.samples = s.spp
        cy.use_adaptive_sampling = False
        cy.use_denoising = s.denoise
        if s.denoise:
            cy.denoiser = "OPENIMAGEDENOISE"
        cy.seed = 0
        cy.max_bounces = s.max_bounces
        cy.diffuse_bounces, cy.glossy_bounces = 1, 1
        cy.transmission_bounces, cy.transparent_max_bounces, cy.volume_bounces = 3, 4, 0
        cy.caustics_reflective = cy.caustics_refractive = False
        cy.filter_width = 1.5
        cy.sample_clamp_indirect = 5.0  # fireflies from glossy paths at low sample counts
        cy.blur_glossy = 1.0
        scene.render.resolution_x, scene.render.resolution_y = s.width, s.height
        scene.render.resolution_percentage = 100
        scene.render.threads_mode = "FIXED"
        scene.render.threads = s.threads
        scene.render.use_persistent_data = True  # keep Cycles' scene (BVH) between renders
        scene.view_settings.view_transform = "Standard"
        scene.view_settings.look = "None"
        scene.view_settings.exposure = 0.0
        scene.view_settings.gamma = 1.0
        settings = scene.render.image_settings
        settings.media_type = "MULTI_LAYER_IMAGE"  # must precede file_format
        settings.file_format = "OPEN_EXR_MULTILAYER"
        settings.color_depth = "32"
        settings.exr_codec = "NONE"  # read back at once; compression only costs time
        layer = scene.view_layers[0]
        layer.use_pass_combined = True
        layer.use_pass_z = True
        layer.use_pass_object_index = True
        aov = layer.aovs.add()
        aov.name, aov.type = NORMAL_AOV, "COLOR"
        self.layer_name = layer.name

        cam_data = bpy.data.cameras.new("camera")
        cam_data.sensor_fit = "HORIZONTAL"
        cam_data.sensor_width = 36.0
        cam_data.clip_start, cam_data.clip_end = 1e-3, 100.0
        self.camera = bpy.data.objects.new("camera", cam_data)
        scene.collection.objects.link(self.camera)
        scene.camera = self.camera

        world = bpy.data.worlds.new("world")
        scene.world = world
        self._world_background = _node_tree(world).nodes.new("ShaderNodeBackground")
        out = _node_tree(world).nodes.new("ShaderNodeOutputWorld")
        _node_tree(world).links.new(self._world_background.outputs["Background"], out.inputs["Surface"])
        # bpy 5.0 gives a new world its own Background -> World Output, and that output stays the active
        # one: procedural scenes have always rendered with its default grey (0.05), not the spec's sky.
        # Left so (existing partitions must resume pixel-identically); mesh scenes activate this output.
        self._world_output = out

    def reset(self) -> None:
        """Forget the scene: the next ``set_scene`` builds everything from scratch."""
        self._spec, self._objects, self._mesh_keys = None, {}, {}
        self._room_key, self._room_objects, self._lights = None, [], []
        self._materials, self._material_specs, self._glass = [], [], None
        self._mesh_asset, self._mesh_data = None, []
        self._transmissive = {}
        self._objects_changed = True
        self._setup()

    # ---------------------------------------------------------------------------- scene update
    def set_scene(self, spec: SceneSpec | MeshSceneSpec) -> None:
        """Bring Blender's scene to ``spec``, touching only what changed since the last call."""
        if self._spec is not None and type(self._spec) is not type(spec):
            self.reset()  # procedural <-> mesh: nothing carries over
        if isinstance(spec, MeshSceneSpec):
            self._set_mesh_scene(spec)
            return
        if isinstance(spec, TransparentSceneSpec):
            self._set_transparent_scene(spec)
            return
        prev = self._spec
        if prev is None or prev.texture != spec.texture:
            self._update_materials(spec)
        if prev is None or prev.geometry != spec.geometry or prev.texture != spec.texture:
            self._update_geometry(spec)
        if prev is None or prev.lighting != spec.lighting:
            self._update_lighting(spec)
        self._spec = spec

    def _update_geometry(self, spec: SceneSpec) -> None:
        g, tex = spec.geometry, spec.texture
        room_key = (g.room, g.window)
        if room_key != self._room_key:
            for ob in self._room_objects:
                _remove_object(ob)
            self._room_objects = []
            self._objects_changed = True
            for name, mesh in room_meshes(g).items():
                ob = _new_mesh_object(f"room_{name}", mesh)
                ob.pass_index = ROOM_UIDS[name]
                self._room_objects.append(ob)
            self._room_key = room_key
        for ob in self._room_objects:
            part = ob.name.removeprefix("room_").split(".")[0]
            mat = (self._glass if part == "window_glass" else
                   self._materials[tex.floor if part == "floor" else tex.ceiling if part == "ceiling" else tex.walls])
            _assign(ob, mat)

        wanted = {sh.uid: sh for sh in g.shapes}
        for uid in list(self._objects):
            if uid not in wanted:
                _remove_object(self._objects.pop(uid))
                self._mesh_keys.pop(uid)
                self._objects_changed = True
        for uid, sh in wanted.items():
            if uid in self._objects and self._mesh_keys[uid] == sh.mesh_key():
                ob = self._objects[uid]
            else:
                if uid in self._objects:
                    _remove_object(self._objects.pop(uid))
                ob = self._new_shape_object(sh)
                self._objects[uid], self._mesh_keys[uid] = ob, sh.mesh_key()
                self._objects_changed = True
            ob.location = sh.center
            ob.rotation_euler = sh.rotation
            _assign(ob, self._glass if sh.glass else self._materials[tex.material_index(uid)])

    def _new_shape_object(self, sh: Shape):
        ob = _new_mesh_object(f"shape_{sh.uid}", shape_mesh(sh))
        ob.pass_index = sh.uid
        if sh.wireframe > 0:
            mod = ob.modifiers.new("wireframe", "WIREFRAME")
            mod.thickness = sh.wireframe
            mod.use_even_offset = True
            mod.use_replace = True
        return ob

    def _update_materials(self, spec: SceneSpec) -> None:
        tex = spec.texture
        while len(self._materials) > len(tex.materials):
            bpy.data.materials.remove(self._materials.pop())
            self._material_specs.pop()
        for i, m in enumerate(tex.materials):
            if i < len(self._materials):
                if self._material_specs[i] == m:
                    continue
                bpy.data.materials.remove(self._materials[i])
                self._materials[i], self._material_specs[i] = _pbr_material(f"mat_{i}", m), m
            else:
                self._materials.append(_pbr_material(f"mat_{i}", m))
                self._material_specs.append(m)
        if self._glass is None or self._spec is None or self._spec.texture.glass != tex.glass:
            if self._glass is not None:
                bpy.data.materials.remove(self._glass)
            self._glass = _glass_material(tex.glass)

    def _set_mesh_scene(self, spec: MeshSceneSpec) -> None:
        if not self._world_output.is_active_output:  # the spec's background, not bpy's default world
            self._world_output.is_active_output = True
        if self._mesh_asset != spec.mesh:
            for ob in self._objects.values():
                _remove_object(ob)
            for block in self._mesh_data:
                (bpy.data.images if isinstance(block, bpy.types.Image) else bpy.data.materials).remove(block)
            self._objects, self._mesh_data = {}, []
            loaded = meshes.load_for_render(spec.mesh)  # refuses a file whose sha256 changed
            ob, self._mesh_data = _new_scan_object(loaded, spec.mesh)
            self._objects[spec.mesh.uid] = ob
            self._mesh_asset = spec.mesh
            self._objects_changed = True
        if self._spec is None or self._spec.lighting != spec.lighting:
            self._update_lighting(spec)
        self._spec = spec

    def _set_transparent_scene(self, spec: TransparentSceneSpec) -> None:
        """Room, table and objects of ``render.transparent.scene_parts``: meshes are rebuilt only where
        their key changed, placements are transforms; each sample's lights are new."""
        if not self._world_output.is_active_output:  # the spec's background, not bpy's default world
            self._world_output.is_active_output = True
        cy = bpy.context.scene.cycles
        # a ray through a hollow glass crosses four surfaces, through two of them eight
        cy.transmission_bounces = cy.transparent_max_bounces = self.settings.max_bounces
        cy.glossy_bounces = min(TRANSPARENT_GLOSSY_BOUNCES, self.settings.max_bounces)
        prev = self._spec
        if prev is None or prev.materials != spec.materials:
            for mat in self._materials:
                bpy.data.materials.remove(mat)
            self._materials = [_pbr_material(f"mat_{i}", m) for i, m in enumerate(spec.materials)]
            self._material_specs = list(spec.materials)
        parts = transparent.scene_parts(spec)
        wanted = {t for t in (p.transmissive for p in parts) if t is not None}
        for t in [t for t in self._transmissive if t not in wanted]:
            bpy.data.materials.remove(self._transmissive.pop(t))
        for t in wanted:
            if t not in self._transmissive:
                self._transmissive[t] = _transmissive_material(f"transmissive_{len(self._transmissive)}", t)
        uids = {p.uid for p in parts}
        for uid in [u for u in self._objects if u not in uids]:
            _remove_object(self._objects.pop(uid))
            self._mesh_keys.pop(uid)
            self._objects_changed = True
        for part in parts:
            ob = self._objects.get(part.uid)
            if ob is None or self._mesh_keys[part.uid] != part.key:
                if ob is not None:
                    _remove_object(ob)
                ob = _new_mesh_object(part.name, part.mesh)
                ob.pass_index = part.uid
                self._objects[part.uid], self._mesh_keys[part.uid] = ob, part.key
                self._objects_changed = True
            ob.location = part.center
            ob.rotation_euler = part.rotation
            _assign(ob, self._transmissive[part.transmissive] if part.transmissive is not None
                    else self._materials[part.material])
        if prev is None or prev.lighting != spec.lighting:
            self._update_lighting(spec)
        self._spec = spec

    def _update_lighting(self, spec: SceneSpec) -> None:
        for ob in self._lights:
            _remove_object(ob)
        self._lights = [_new_light(i, li) for i, li in enumerate(spec.lighting.lights)]
        bg = self._world_background
        bg.inputs["Color"].default_value = (*spec.lighting.sky_color, 1.0)
        bg.inputs["Strength"].default_value = spec.lighting.sky_strength

    # ---------------------------------------------------------------------------------- render
    def render(self, spec: SceneSpec | MeshSceneSpec) -> list[ViewPixels]:
        self.set_scene(spec)
        return [self.render_view(spec, i) for i in range(len(spec.camera.views))]

    def render_view(self, spec: SceneSpec | MeshSceneSpec, index: int) -> ViewPixels:
        view = spec.camera.views[index]
        self.camera.matrix_world = _matrix(cam.blender_matrix_world(view))
        self.camera.data.lens = cam.blender_lens(view, self.camera.data.sensor_width)
        self.camera.data.clip_start, self.camera.data.clip_end = _clip_range(spec, view)
        scene = bpy.context.scene
        scene.render.filepath = os.path.join(self._tmp.name, "view.exr")
        # Cycles' persistent data keeps the synced scene (BVH, shaders) between renders, which pays
        # off while only the camera, transforms or materials change; but it keeps growing when objects
        # come and go (measured: +100 MB over 40 new scenes), so it is rebuilt from scratch then.
        scene.render.use_persistent_data = not self._objects_changed
        with _stdout_silenced():  # Cycles prints a status line per tile and sample
            t0 = time.perf_counter()
            bpy.ops.render.render(write_still=True)
            self.render_seconds += time.perf_counter() - t0
        self._objects_changed = False
        return self._read_exr(scene.render.filepath)

    def _read_exr(self, path: str) -> ViewPixels:
        channels = {}
        with OpenEXR.File(path, separate_channels=True) as f:
            for part in f.parts:
                for name, ch in part.channels.items():
                    channels[name.removeprefix(self.layer_name + ".")] = ch.pixels
        rgb = np.stack([channels[f"Combined.{c}"] for c in "RGB"], -1).astype(np.float32)
        z = channels["Depth.Z"].astype(np.float32)
        index = np.rint(channels["IndexOB.X"] if "IndexOB.X" in channels else channels["Object Index.X"])
        normal = np.stack([channels[f"{NORMAL_AOV}.{c}"] for c in "RGB"], -1).astype(np.float32)
        hit = z < BACKGROUND_Z
        norm = np.linalg.norm(normal, axis=-1, keepdims=True)
        normal = np.where(hit[..., None] & (norm > 1e-6), normal / np.maximum(norm, 1e-6), 0.0)
        return ViewPixels(rgb_linear=rgb, depth=np.where(hit, z, 0.0).astype(np.float32),
                          normal_world=normal.astype(np.float32),
                          index=np.where(hit, index, 0).astype(np.uint16))

    # ----------------------------------------------------------------------------------- export
    def export_geometry(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """World-space triangles of everything a camera ray can hit, as Blender evaluates them
        (modifiers applied): vertices [N,3], faces [T,3], instance id per face [T]."""
        depsgraph = bpy.context.evaluated_depsgraph_get()
        verts, faces, ids, offset = [], [], [], 0
        for ob in list(self._objects.values()) + self._room_objects:
            ev = ob.evaluated_get(depsgraph)
            me = ev.to_mesh()
            me.calc_loop_triangles()
            v = np.empty(len(me.vertices) * 3, np.float32)
            me.vertices.foreach_get("co", v)
            v = v.reshape(-1, 3) @ np.array(ev.matrix_world)[:3, :3].T + np.array(ev.matrix_world)[:3, 3]
            t = np.empty(len(me.loop_triangles) * 3, np.int64)
            me.loop_triangles.foreach_get("vertices", t)
            verts.append(v)
            faces.append(t.reshape(-1, 3) + offset)
            ids.append(np.full(len(t) // 3, ob.pass_index))
            offset += len(v)
            ev.to_mesh_clear()
        return np.concatenate(verts), np.concatenate(faces), np.concatenate(ids)

    def close(self) -> None:
        self._tmp.cleanup()


# ------------------------------------------------------------------------------------ mesh mode
def _clip_range(spec, view) -> tuple[float, float]:
    """Procedural scenes keep ``CLIP``; a mesh's camera clips nothing of it, however small or far."""
    if not isinstance(spec, MeshSceneSpec):
        return CLIP
    distance = float(np.linalg.norm(np.subtract(view.position, spec.mesh.center)))
    near = max(distance - spec.mesh.radius, 1e-6)
    return min(CLIP[0], 0.5 * near), max(CLIP[1], 2.0 * (distance + spec.mesh.radius))


def _new_scan_object(loaded: meshes.LoadedMesh, asset: MeshAsset):
    """(object, [materials and images it owns]) of a loaded mesh: one Blender mesh in the file's
    coordinates placed by the object transform ``scale * rotation``, one material slot per part.
    Coincident vertices are merged so smooth shading crosses UV seams; edges folding more than
    ``meshes.SHARP_ANGLE_DEG`` stay sharp (CAD-like meshes keep their faces flat)."""
    vertices, faces = loaded.geometry()
    merged, tris = meshes.merge_coincident(vertices, faces)
    part_of_face = np.repeat(np.arange(len(loaded.parts)), [len(p.faces) for p in loaded.parts])
    # per face corner, in the file's (OpenGL: v up) UV convention; linear colours, no 8-bit round trip
    uv = np.concatenate([(p.uv if p.uv is not None else np.zeros((len(p.vertices), 2)))[p.faces] for p in loaded.parts])
    rgb = np.concatenate([p.colors if p.colors is not None else np.ones((len(p.faces), 3, 3)) for p in loaded.parts])
    # merging can leave a triangle two corners on one vertex: invalid for Blender, invisible anyway
    keep = (tris[:, 0] != tris[:, 1]) & (tris[:, 1] != tris[:, 2]) & (tris[:, 2] != tris[:, 0])
    tris, part_of_face, uv, rgb = tris[keep], part_of_face[keep], uv[keep], rgb[keep]
    mesh = Mesh(vertices=merged.astype(np.float32), faces=tris.ravel().astype(np.int32),
                face_sizes=np.full(len(tris), 3, np.int32), smooth=True)
    ob = _new_mesh_object("scan", mesh)
    me = ob.data
    me.set_sharp_from_angle(angle=math.radians(meshes.SHARP_ANGLE_DEG))
    me.polygons.foreach_set("material_index", part_of_face.astype(np.int32))
    if any(p.uv is not None for p in loaded.parts):
        me.uv_layers.new(name=UV_MAP).data.foreach_set("uv", uv.astype(np.float32).ravel())
    if any(p.colors is not None for p in loaded.parts):
        rgba = np.concatenate([rgb.reshape(-1, 3), np.ones((len(rgb) * 3, 1))], 1)
        me.color_attributes.new(COLOR_ATTRIBUTE, "FLOAT_COLOR", "CORNER").data.foreach_set(
            "color", rgba.astype(np.float32).ravel())
    owned = []
    for i, part in enumerate(loaded.parts):
        mat, image = _scan_material(f"scan_{i}", part, asset.roughness)
        me.materials.append(mat)
        owned += [mat] + ([image] if image is not None else [])
    R = np.eye(4)
    R[:3, :3] = asset.scale * np.asarray(asset.rotation)
    ob.matrix_world = _matrix(R)
    ob.pass_index = asset.uid
    return ob, owned


def _scan_material(name: str, part: meshes.MeshPart, roughness: float):
    """Principled BSDF whose base colour is ``factor`` times the part's texture and/or corner colours."""
    mat = bpy.data.materials.new(name)
    nt = _node_tree(mat)
    nt.nodes.clear()
    bsdf = nt.nodes.new("ShaderNodeBsdfPrincipled")
    bsdf.inputs["Roughness"].default_value = roughness
    colour, image = None, None
    if part.image is not None:
        image = _image(name, part.image)
        tex = nt.nodes.new("ShaderNodeTexImage")
        tex.image = image
        uv = nt.nodes.new("ShaderNodeUVMap")
        uv.uv_map = UV_MAP
        nt.links.new(uv.outputs["UV"], tex.inputs["Vector"])
        colour = tex.outputs["Color"]
    if part.colors is not None:
        attr = nt.nodes.new("ShaderNodeAttribute")
        attr.attribute_type, attr.attribute_name = "GEOMETRY", COLOR_ATTRIBUTE
        colour = attr.outputs["Color"] if colour is None else _multiply(nt, colour, attr.outputs["Color"])
    factor = (*part.factor, 1.0)
    if colour is None:
        bsdf.inputs["Base Color"].default_value = factor
    else:
        if part.factor != (1.0, 1.0, 1.0):
            colour = _multiply(nt, colour, factor)
        nt.links.new(colour, bsdf.inputs["Base Color"])
    _with_normal_aov(nt, bsdf.outputs["BSDF"])
    return mat, image


def _multiply(nt, a, b):
    """A colour socket: ``a`` times ``b`` (a socket or an RGBA value)."""
    mix = nt.nodes.new("ShaderNodeMix")
    mix.data_type, mix.blend_type = "RGBA", "MULTIPLY"
    _socket(mix.inputs, "Factor_Float").default_value = 1.0
    nt.links.new(a, _socket(mix.inputs, "A_Color"))
    if isinstance(b, tuple):
        _socket(mix.inputs, "B_Color").default_value = b
    else:
        nt.links.new(b, _socket(mix.inputs, "B_Color"))
    return _socket(mix.outputs, "Result_Color")


def _image(name: str, pixels: np.ndarray):
    """A generated 8-bit sRGB image holding ``pixels`` (uint8 [H,W,3], row 0 at the top); Blender's
    rows start at the bottom. Set in one foreach_set call (per-pixel access is orders slower)."""
    h, w = pixels.shape[:2]
    image = bpy.data.images.new(name, w, h, alpha=False, float_buffer=False)
    image.colorspace_settings.name = "sRGB"
    rgba = np.concatenate([pixels[::-1].astype(np.float32) / 255.0, np.ones((h, w, 1), np.float32)], -1)
    image.pixels.foreach_set(rgba.ravel())
    return image


# --------------------------------------------------------------------------------- bpy helpers
@contextlib.contextmanager
def _stdout_silenced():
    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


def _matrix(m: np.ndarray):
    from mathutils import Matrix
    return Matrix([list(map(float, row)) for row in m])


def _node_tree(idblock):
    if idblock.node_tree is None:  # Blender < 5 creates node trees on demand only
        idblock.use_nodes = True
    return idblock.node_tree


def _new_mesh_object(name: str, mesh: Mesh):
    me = bpy.data.meshes.new(name)
    me.vertices.add(len(mesh.vertices))
    me.vertices.foreach_set("co", mesh.vertices.ravel())
    me.loops.add(len(mesh.faces))
    me.loops.foreach_set("vertex_index", mesh.faces)
    me.polygons.add(len(mesh.face_sizes))
    starts = np.concatenate([[0], np.cumsum(mesh.face_sizes)[:-1]]).astype(np.int32)
    me.polygons.foreach_set("loop_start", starts)
    me.update(calc_edges=True)
    if mesh.smooth:
        me.shade_smooth()
    else:
        me.shade_flat()
    ob = bpy.data.objects.new(name, me)
    bpy.context.scene.collection.objects.link(ob)
    return ob


def _remove_object(ob) -> None:
    data = ob.data
    bpy.data.objects.remove(ob, do_unlink=True)
    if data is not None and data.users == 0:
        if isinstance(data, bpy.types.Mesh):
            own = [m for m in data.materials if m is not None and m.name.startswith("bulb_")]
            bpy.data.meshes.remove(data)
            for m in own:  # a bulb's emission material belongs to it alone
                bpy.data.materials.remove(m)
        elif isinstance(data, bpy.types.Light):
            bpy.data.lights.remove(data)


def _assign(ob, material) -> None:
    if len(ob.data.materials) == 0:
        ob.data.materials.append(material)
    elif ob.data.materials[0] != material:
        ob.data.materials[0] = material


def _socket(sockets, identifier):
    return next(s for s in sockets if s.identifier == identifier)


def _with_normal_aov(nt, output_shader) -> None:
    """Every material writes the interpolated geometric normal (before bump) to the AOV, so the
    normal maps never see texture bump and stay identical across texture samples."""
    geo = nt.nodes.new("ShaderNodeNewGeometry")
    aov = nt.nodes.new("ShaderNodeOutputAOV")
    aov.aov_name = NORMAL_AOV
    nt.links.new(geo.outputs["Normal"], aov.inputs["Color"])
    out = nt.nodes.new("ShaderNodeOutputMaterial")
    nt.links.new(output_shader, out.inputs["Surface"])


_PATTERN_NODES = {"noise": "ShaderNodeTexNoise", "voronoi": "ShaderNodeTexVoronoi",
                  "wave": "ShaderNodeTexWave", "bricks": "ShaderNodeTexBrick",
                  "checker": "ShaderNodeTexChecker", "magic": "ShaderNodeTexMagic",
                  "gradient": "ShaderNodeTexGradient"}


def _pbr_material(name: str, m: Material):
    mat = bpy.data.materials.new(name)
    nt = _node_tree(mat)
    nt.nodes.clear()
    bsdf = nt.nodes.new("ShaderNodeBsdfPrincipled")
    bsdf.inputs["Roughness"].default_value = m.roughness
    bsdf.inputs["Metallic"].default_value = m.metallic
    coords = nt.nodes.new("ShaderNodeTexCoord")
    mapping = nt.nodes.new("ShaderNodeMapping")
    mapping.inputs["Scale"].default_value = (m.scale,) * 3
    nt.links.new(coords.outputs["Object"], mapping.inputs["Vector"])
    if m.image:
        img = nt.nodes.new("ShaderNodeTexImage")
        img.image = bpy.data.images.load(m.image, check_existing=True)
        img.projection = "BOX"
        img.projection_blend = 0.2
        nt.links.new(mapping.outputs["Vector"], img.inputs["Vector"])
        nt.links.new(img.outputs["Color"], bsdf.inputs["Base Color"])
    elif m.pattern == "plain":
        bsdf.inputs["Base Color"].default_value = (*m.color_a, 1.0)
    else:
        tex = nt.nodes.new(_PATTERN_NODES[m.pattern])
        nt.links.new(mapping.outputs["Vector"], tex.inputs["Vector"])
        for key, value in (("Detail", m.detail), ("Distortion", m.detail / 2)):
            if key in tex.inputs:
                tex.inputs[key].default_value = value
        factor = tex.outputs["Distance"] if m.pattern == "voronoi" else tex.outputs["Factor"]
        mix = nt.nodes.new("ShaderNodeMix")
        mix.data_type = "RGBA"
        nt.links.new(factor, _socket(mix.inputs, "Factor_Float"))
        _socket(mix.inputs, "A_Color").default_value = (*m.color_a, 1.0)
        _socket(mix.inputs, "B_Color").default_value = (*m.color_b, 1.0)
        nt.links.new(_socket(mix.outputs, "Result_Color"), bsdf.inputs["Base Color"])
    if m.bump > 0:
        noise = nt.nodes.new("ShaderNodeTexNoise")
        noise.inputs["Scale"].default_value = 4.0
        nt.links.new(mapping.outputs["Vector"], noise.inputs["Vector"])
        bump = nt.nodes.new("ShaderNodeBump")
        bump.inputs["Strength"].default_value = m.bump
        bump.inputs["Distance"].default_value = 0.01
        nt.links.new(noise.outputs["Factor"], bump.inputs["Height"])
        nt.links.new(bump.outputs["Normal"], bsdf.inputs["Normal"])
    _with_normal_aov(nt, bsdf.outputs["BSDF"])
    return mat


def _glass_material(glass):
    mat = bpy.data.materials.new("glass")
    nt = _node_tree(mat)
    nt.nodes.clear()
    bsdf = nt.nodes.new("ShaderNodeBsdfGlass")
    bsdf.inputs["Color"].default_value = (*glass.tint, 1.0)
    bsdf.inputs["IOR"].default_value = glass.ior
    bsdf.inputs["Roughness"].default_value = glass.roughness
    _with_normal_aov(nt, bsdf.outputs["BSDF"])
    return mat


def _transmissive_material(name: str, t: Transmissive):
    """Glass: a Glass BSDF of colour ``tint``; plastic: a Principled BSDF with transmission. Either with a
    Volume Absorption of colour ``tint`` and density ``absorption`` inside when that is > 0."""
    mat = bpy.data.materials.new(name)
    nt = _node_tree(mat)
    nt.nodes.clear()
    if t.kind == "glass":
        bsdf = nt.nodes.new("ShaderNodeBsdfGlass")
        bsdf.inputs["Color"].default_value = (*t.tint, 1.0)
    elif t.kind == "plastic":
        bsdf = nt.nodes.new("ShaderNodeBsdfPrincipled")
        bsdf.inputs["Base Color"].default_value = (*t.tint, 1.0)
        bsdf.inputs["Transmission Weight"].default_value = t.transmission
    else:
        raise ValueError(f"unknown transmissive kind {t.kind!r}")
    bsdf.inputs["IOR"].default_value = t.ior
    bsdf.inputs["Roughness"].default_value = t.roughness
    # Caustics are off (noise), so shadow rays would find glass opaque and it would cast black shadows:
    # shadow rays see a Transparent BSDF of the tint instead. Camera rays see the BSDF alone (the mix
    # factor is 0 for them), so depth, normals and the mask stay those of the glass surface.
    path = nt.nodes.new("ShaderNodeLightPath")
    shadow = nt.nodes.new("ShaderNodeBsdfTransparent")
    shadow.inputs["Color"].default_value = (*(SHADOW_TRANSMITTANCE * np.asarray(t.tint)), 1.0)
    mix = nt.nodes.new("ShaderNodeMixShader")
    nt.links.new(path.outputs["Is Shadow Ray"], _socket(mix.inputs, "Fac"))
    nt.links.new(bsdf.outputs["BSDF"], mix.inputs[1])
    nt.links.new(shadow.outputs["BSDF"], mix.inputs[2])
    _with_normal_aov(nt, mix.outputs["Shader"])
    if t.absorption > 0:
        out = next(n for n in nt.nodes if n.bl_idname == "ShaderNodeOutputMaterial")
        vol = nt.nodes.new("ShaderNodeVolumeAbsorption")
        vol.inputs["Color"].default_value = (*t.tint, 1.0)
        vol.inputs["Density"].default_value = t.absorption
        nt.links.new(vol.outputs["Volume"], out.inputs["Volume"])
    return mat


def _new_light(i: int, li: Light):
    """Lights are invisible to camera rays, so the lighting attribute never changes depth or masks."""
    if li.kind == "bulb":  # an emissive sphere
        from .geometry import ellipsoid_mesh
        ob = _new_mesh_object(f"bulb_{i}", ellipsoid_mesh((2 * li.size,) * 3, None))
        ob.location = li.position
        mat = bpy.data.materials.new(f"bulb_{i}")
        nt = _node_tree(mat)
        nt.nodes.clear()
        em = nt.nodes.new("ShaderNodeEmission")
        em.inputs["Color"].default_value = (*li.color, 1.0)
        em.inputs["Strength"].default_value = li.power
        out = nt.nodes.new("ShaderNodeOutputMaterial")
        nt.links.new(em.outputs["Emission"], out.inputs["Surface"])
        ob.data.materials.append(mat)
        ob.visible_camera = False
        return ob
    kind = {"area": "AREA", "sun": "SUN", "point": "POINT"}[li.kind]
    data = bpy.data.lights.new(f"light_{i}", kind)
    data.color = li.color
    data.energy = li.power
    if kind == "AREA":
        data.shape, data.size = "SQUARE", li.size
    elif kind == "POINT":
        data.shadow_soft_size = li.size
    else:
        data.angle = math.radians(li.size)
    ob = bpy.data.objects.new(f"light_{i}", data)
    ob.location = li.position
    # lights shine along their local -z: rotate -z onto `direction`
    ob.rotation_mode = "QUATERNION"
    from mathutils import Vector
    ob.rotation_quaternion = (-Vector(li.direction)).to_track_quat("Z", "Y")
    ob.visible_camera = False
    bpy.context.scene.collection.objects.link(ob)
    return ob
