"""Training objectives: pure functions of tensors, usable in any training loop."""

from physalign.objectives.flow import contrastive_fm_loss, flow_matching_loss, interpolate, velocity_target

__all__ = ["contrastive_fm_loss", "flow_matching_loss", "interpolate", "velocity_target"]
