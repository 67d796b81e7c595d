"""Stage one of the world model: train its per-frame autoencoder (``model.vae``, a diffusers
``AutoencoderKL``) as a method of the shared loop, on the ``frames`` data source.

    L = mean_pixels w * d(x_hat, x) + kl_weight * KL(q(z|x) || N(0, I)),   w = object_weight on object
    pixels, 1 elsewhere; d = the squared error (``recon: l2``) or the absolute error (``recon: l1``) averaged
    over the 3 channels

The L1 form penalises small errors more, which keeps the corners of small blocks square; the shipped
recipe uses it to sharpen the decoder with the encoder frozen (``configs/base/base_decoder.yaml``).

Objects cover a few percent of a world frame; an unweighted reconstruction loss is content to paint the
background, hence the weight (21, from the planning notes in the workplace's shared/docs/world-notes.md).
After the last step, the latent scaling factor becomes 1 / std of the data's latents, so the flow model sees
unit-variance latents.
"""

from __future__ import annotations

import torch

from physalign.train.methods import Method, register


@register("autoencoder")
class Autoencoder(Method):
    data = "frames"

    def __init__(self, object_weight: float = 21.0, kl_weight: float = 1e-6, scale_frames: int = 4096, recon: str = "l2"):
        super().__init__()
        if recon not in ("l1", "l2"):
            raise ValueError(f"method.recon must be 'l1' or 'l2'. Got {recon!r}.")
        self.object_weight, self.kl_weight, self.scale_frames = object_weight, kl_weight, scale_frames
        self.error = (lambda d: d.abs()) if recon == "l1" else (lambda d: d.pow(2))

    def setup(self, model, data) -> None:
        if not hasattr(model, "vae") or not hasattr(model.vae, "encode"):
            raise TypeError(f"method autoencoder trains a per-frame `vae`; {type(model).__name__} has none")

    def forward(self, model, batch: dict) -> dict[str, torch.Tensor]:
        x = batch["pixels"]  # (B, 3, H, W)
        weights = 1.0 + (self.object_weight - 1.0) * batch["object_mask"].float()  # (B, H, W)
        posterior = model.vae.encode(x).latent_dist
        recon = model.vae.decode(posterior.sample()).sample  # (B, 3, H, W)
        rec = (self.error(recon - x).mean(1) * weights).mean()
        kl = posterior.kl().mean()
        return {"loss": rec + self.kl_weight * kl, "recon": rec.detach(), "kl": kl.detach()}

    @torch.no_grad()
    def finish(self, model, data) -> None:
        """Measure the latent scaling factor, unless the encoder was frozen (its latent space is unchanged)."""
        if any(p.requires_grad for p in model.vae.encoder.parameters()):
            model.cfg.scaling_factor = latent_scale(model.vae, data, self.scale_frames)


@torch.no_grad()
def latent_scale(vae, data, n: int, chunk: int = 256) -> float:
    """1 / std of the posterior means of up to ``n`` frames (a fixed random subset)."""
    idx = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[:n]
    z = torch.cat([vae.encode(data.batch(idx[i : i + chunk])["pixels"]).latent_dist.mean for i in range(0, len(idx), chunk)])
    return float(1.0 / z.std())
