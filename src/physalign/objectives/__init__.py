"""Training objectives: pure functions of tensors, usable in any training loop.

Videos, latents and velocities are (B, C, T, H, W); token features are (B, F, H, W, C).
"""

from physalign.objectives.alignment import repa_loss, trd_loss, tsa_loss
from physalign.objectives.direct import (alignment_condition, direct_loss, exclusive_negatives, mmd_rbf,
                                         velocity_regularizer)
from physalign.objectives.flow import contrastive_fm_loss, flow_matching_loss, interpolate, velocity_target
from physalign.objectives.judged import phenomena_loss, predicted_x0, rating_loss
from physalign.objectives.motion import motion_mask, salient_tokens, tubelet_motion
from physalign.objectives.preference import LEVEL_MSE, flow_dpo_loss
from physalign.objectives.stss import stss_row_sum

__all__ = [
    "LEVEL_MSE", "alignment_condition", "contrastive_fm_loss", "direct_loss", "exclusive_negatives",
    "flow_dpo_loss", "flow_matching_loss", "interpolate", "mmd_rbf", "motion_mask", "phenomena_loss",
    "predicted_x0", "rating_loss", "repa_loss", "salient_tokens", "stss_row_sum", "trd_loss", "tsa_loss",
    "tubelet_motion", "velocity_regularizer", "velocity_target",
]
