"""Training: typed configs, method plugins, the loop and its checkpoints."""
