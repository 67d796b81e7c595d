"""The teacher of representation-alignment methods (REPA, TRD, TSA, M-TSA): a tiny ``VideoMAEModel``
pre-trained on world videos, its cached features, and the projector from student tokens to its grid::

    teacher = load_teacher("checkpoints/teacher")                     # frozen, eval mode
    grid = teacher_grid(teacher.config)                                # (F, H, W), from the config
    cached = cache_teacher_features(teacher, manifest, cache_dir, layer=-1, rows=data.rows)
    target = cached.features[batch["index"]].float()                   # (B, F, H, W, D), rows' order
    projector = Projector(student_dim, teacher.config.hidden_size, student_grid, grid, hidden_dim=...)
"""

from physalign.teacher.cache import TeacherFeatures, cache_teacher_features
from physalign.teacher.model import load_teacher, save_teacher, teacher_features, teacher_grid, to_teacher_input
from physalign.teacher.projector import Projector

__all__ = ["Projector", "TeacherFeatures", "cache_teacher_features", "load_teacher", "save_teacher",
           "teacher_features", "teacher_grid", "to_teacher_input"]
