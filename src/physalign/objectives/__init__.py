"""Training objectives: pure functions of tensors, usable in any training loop."""

from physalign.objectives.flow import flow_matching_loss, interpolate, velocity_target

__all__ = ["flow_matching_loss", "interpolate", "velocity_target"]
