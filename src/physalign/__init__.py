"""physalign: post-train text-to-video generators toward physical plausibility."""

__version__ = "0.1.0"
