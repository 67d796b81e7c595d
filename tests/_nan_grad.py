"""A test method for launched runs: flow matching whose gradient (not its loss) is NaN on the steps in
``bad`` on the processes in ``ranks``. Launch through this file (``python tests/_nan_grad.py train ...``) so that
every process registers it."""

import os

import torch

from physalign.train.methods import Method, build_method, register


@register("test_nan_grad")
class NanGradient(Method):
    def __init__(self, bad: list[int] = (), ranks: list[int] = (0,), per_sample_noise: bool = False):
        super().__init__()
        self.bad, self.ranks = set(bad), set(ranks)
        self.inner = build_method("fm", {"per_sample_noise": per_sample_noise})

    def forward(self, model, batch):
        terms = self.inner(model, batch)
        if batch["step"] in self.bad and int(os.environ.get("RANK", "0")) in self.ranks:
            weight = next(p for p in model.parameters() if p.requires_grad)
            zero = (weight - weight.detach()).sum()  # 0, with gradient 1
            terms["loss"] = terms["loss"] + 0.0 * torch.sqrt(zero)  # value unchanged; d sqrt(0) = inf, 0 * inf = NaN
        return terms


if __name__ == "__main__":
    from physalign.cli import app

    app()
