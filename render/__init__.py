"""MegaSynth-style attribute-controlled synthetic data on headless Blender.

Only ``render.blender_backend`` imports ``bpy``; specs (``render.spec``), the generator, the job
runner and the reader (``render.dataset``) work without Blender.
"""
