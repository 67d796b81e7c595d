"""SFT: the baseline every post-training method is compared with.

    L = L_FM = mean ||v_theta(x_t, t, c) - (eps - x0)||^2   on the post-training data

The same objective as the base model's ``fm``, under its own name so a comparison reads "sft": same data,
steps and seeds as the method it is compared with.
"""

from __future__ import annotations

from physalign.train.methods import register
from physalign.train.methods.fm import FlowMatching


@register("sft")
class SFT(FlowMatching):
    """Plain flow matching on the post-training data. Batch: {"latents", "prompts"}."""
