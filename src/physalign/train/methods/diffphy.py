"""DiffPhy: physics reasoning plus a multimodal judge (docs/methods.md, section DiffPhy; equations partly
public, our choices marked [ours] and configurable):

    L = L_FM + β (L_phen + L_com + L_sem)

1. The data gives each prompt its expected phenomena facts (``data.expected_facts``): in the world a reasoner
   (``physalign.reasoning``; the world's grammar by default; with an enhanced prompt, used for conditioning
   when ``enhanced_prompts``), for precomputed clips the manifest's ``phenomena``.
2. For ``judge_fraction`` of the batch [ours] the time is drawn below ``t_max`` [ours: decodes of high-noise
   predictions are noise]; their clean-clip prediction x0_hat = x_t - t v is decoded and shown to the judge
   (``physalign.judges.load_judge``: the world judge or a video-language model, picked by its folder), which
   scores up to ``max_facts`` facts (L_phen), physical commonsense (L_com) and prompt consistency (L_sem)
   (``physalign.objectives.judged``); gradients flow through the frozen judge and the frozen decoder into the
   backbone.
3. The base is frozen; the backbone trains a LoRA adapter, merged at export.
4. Facts the judge marked unmatched (P(yes) < 0.5) the last time it saw a clip are injected the next time
   through a trainable cross-attention branch (:class:`FactBranch`, zero-initialised output) added to the
   outputs of blocks ``inject_blocks``; the branch is switched off with probability ``branch_off`` so the model
   does not come to depend on it, and it is not part of the exported model (at inference nobody knows the
   failed facts).

Logged: fm, phen, com, sem, the mean P(yes) of the facts, the mean expected ratings, the fraction of judged
facts that failed and the fraction of samples that got the branch.
"""

from __future__ import annotations

import hashlib
import random

import torch
from torch import nn

from physalign.judges import load_judge as load_any_judge
from physalign.judges.base import PLAUSIBILITY_QUESTION, fact_question, prompt_question
from physalign.models.lora import LoraSpec, add_lora, merge_lora
from physalign.objectives import flow_matching_loss, interpolate, phenomena_loss, predicted_x0, rating_loss
from physalign.train.methods import DataError, Method, register
from physalign.train.methods.fm import check_schedule, drop_prompts, encode_prompts, noisy_velocity, sample_t
from physalign.train.rng import python_rng_from_json, python_rng_to_json


def load_judge(path: str):
    """The frozen judge in folder ``path``, the kind picked by its contents (:func:`physalign.judges.load_judge`)."""
    return load_any_judge(path)


@torch.no_grad()
def token_width(model, data) -> int:
    """D of the backbone's tokens, read off one forward pass (the model's classes are not asked)."""
    probe = data.batch(torch.arange(1))
    _, _, _, feats = noisy_velocity(model, probe["latents"], probe["prompts"], 0.0, "uniform", taps=(0,))
    return feats[0].shape[-1]


class FactBranch(nn.Module):
    """Cross-attention from backbone tokens (B, N, D) to encoded facts (B, K, E), low rank r:

        out = softmax((h W_q)(f W_k)^T / sqrt(r)) (f W_v) W_o,   W_o = 0 at the start

    Facts are encoded as text by a hashed bag of words (``buckets`` word embeddings, mean over a fact's
    words) [ours]: the world's text encoder knows only the prompt grammar's words."""

    def __init__(self, dim: int, rank: int = 16, fact_dim: int = 64, buckets: int = 1024):
        super().__init__()
        self.buckets = buckets
        self.words = nn.EmbeddingBag(buckets, fact_dim, mode="mean")
        self.q, self.k, self.v = nn.Linear(dim, rank, bias=False), nn.Linear(fact_dim, rank, bias=False), nn.Linear(fact_dim, rank, bias=False)
        self.out = nn.Linear(rank, dim, bias=False)
        nn.init.zeros_(self.out.weight)

    def encode(self, facts: list[list[str]]) -> tuple[torch.Tensor, torch.Tensor]:
        """B lists of facts -> (B, K, E) fact vectors and a (B, K) bool mask, K = the longest list (>= 1)."""
        k = max(1, max(len(f) for f in facts))
        ids, offsets, mask = [], [], torch.zeros(len(facts), k, dtype=torch.bool)
        for b, fs in enumerate(facts):
            for j in range(k):
                offsets.append(len(ids))
                words = fs[j].lower().split() if j < len(fs) else []
                ids += [int(hashlib.md5(w.encode()).hexdigest()[:8], 16) % self.buckets for w in words] or [0]
                mask[b, j] = j < len(fs)
        device = self.words.weight.device
        vectors = self.words(torch.tensor(ids, device=device), torch.tensor(offsets, device=device))
        return vectors.view(len(facts), k, -1), mask.to(device)

    def forward(self, h: torch.Tensor, facts: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        q, k, v = self.q(h), self.k(facts), self.v(facts)  # (B, N, r), (B, K, r), (B, K, r)
        scores = (q @ k.transpose(1, 2)) / q.shape[-1] ** 0.5  # (B, N, K)
        attn = scores.masked_fill(~mask[:, None, :], float("-inf")).softmax(-1).nan_to_num(0.0)
        return self.out(attn @ v)  # (B, N, D)


@register("diffphy")
class DiffPhy(Method):
    """Batch: {"latents": (B, C, T, H, W), "prompts", "rows", "index"}."""

    def __init__(self, judge: str = "checkpoints/judge", reasoner: str = "world", beta: float = 0.1,
                 tau: float = 5.0, t_max: float = 0.5, judge_fraction: float = 0.25, max_facts: int = 4,
                 enhanced_prompts: bool = False, inject_blocks: list[int] = (2, 3), branch_off: float = 0.5,
                 branch_rank: int = 16, lora_rank: int = 16, lora_alpha: float = 16.0, cfg_dropout: float = 0.1,
                 t_schedule: str = "model"):
        super().__init__()
        check_schedule("diffphy", cfg_dropout, t_schedule)
        if not (0 < t_max <= 1 and 0 < judge_fraction <= 1 and 0 <= branch_off <= 1 and max_facts >= 1 and beta >= 0):
            raise ValueError(f"method diffphy: need 0 < t_max <= 1, 0 < judge_fraction <= 1, 0 <= branch_off <= 1, "
                             f"max_facts >= 1, beta >= 0. Got {t_max}, {judge_fraction}, {branch_off}, {max_facts}, {beta}.")
        self.judge_path, self.reasoner = judge, reasoner
        self.beta, self.tau, self.t_max, self.judge_fraction, self.max_facts = beta, tau, t_max, judge_fraction, max_facts
        self.enhanced_prompts, self.inject_blocks, self.branch_off = enhanced_prompts, list(inject_blocks), branch_off
        self.branch_rank, self.lora = branch_rank, LoraSpec(rank=lora_rank, alpha=lora_alpha)
        self.cfg_dropout, self.t_schedule = cfg_dropout, t_schedule
        self._judge: list = []  # not a sub-module: frozen, not trained, not checkpointed
        self.failed: dict[int, list[str]] = {}  # row -> facts the judge last marked unmatched
        self.rng = random.Random(0)

    def setup(self, model, data) -> None:
        add_lora(model.backbone, self.lora)
        blocks = len(model.backbone_blocks)
        if not all(-blocks <= i < blocks for i in self.inject_blocks):
            raise ValueError(f"method diffphy: inject_blocks {self.inject_blocks} out of range for {blocks} backbone blocks")
        if not hasattr(self, "branch"):  # built once, so a resumed run's checkpoint fits it
            self.branch = FactBranch(token_width(model, data), self.branch_rank)
        self.facts, enhanced = data.expected_facts(self.reasoner)
        if self.enhanced_prompts and enhanced is None:
            raise DataError("method diffphy: enhanced_prompts needs an enhanced prompt per clip; precomputed clips "
                            "have their caption only: precompute a `physalign reason` output with --column "
                            "caption=enhanced_prompt and set method.enhanced_prompts=false")
        self.prompts = enhanced if self.enhanced_prompts else data.prompts
        self._judge = [load_judge(self.judge_path)]

    def finish(self, model, data) -> None:
        merge_lora(model.backbone)

    def extra_state(self) -> dict:
        failed = {str(i): facts for i, facts in self.failed.items()}
        return {"failed": failed, "rng": python_rng_to_json(self.rng.getstate())}

    def load_extra_state(self, state: dict) -> None:
        self.failed = {int(i): list(facts) for i, facts in state.get("failed", {}).items()}
        if "rng" in state:
            self.rng.setstate(python_rng_from_json(state["rng"]))

    @property
    def judge(self):
        return self._judge[0]

    def forward(self, model, batch: dict) -> dict[str, torch.Tensor]:
        x0, idx = batch["latents"], batch["index"].tolist()
        b, k = x0.shape[0], max(1, round(self.judge_fraction * x0.shape[0]))
        eps, t = torch.randn_like(x0), sample_t(b, self.t_schedule, times=model.times).to(x0.device)
        t[:k] = self.t_max * torch.rand(k, device=x0.device)  # the judged samples: low noise
        prompts = drop_prompts([self.prompts[i] for i in idx], self.cfg_dropout)
        x_t = interpolate(x0, eps, t)
        v, injected = self._velocity(model, x_t, t, encode_prompts(model, prompts, batch), idx)
        fm = flow_matching_loss(v, x0, eps)
        videos = model.decode(predicted_x0(x_t[:k], v[:k], t[:k]))  # (k, 3, T, H, W), differentiable
        judged = self._judge_terms(videos, [batch["prompts"][j] for j in range(k)], idx[:k])
        loss = fm + self.beta * (judged["phen"] + judged["com"] + judged["sem"])
        return {"loss": loss, "fm": fm.detach(), "branch_frac": injected, **{n: x.detach() for n, x in judged.items()}}

    def _velocity(self, model, x_t, t, text, idx):
        """The model's velocity, with the fact branch on for samples whose failed facts are known (each kept
        with probability 1 - branch_off). Returns (v, fraction of samples that got the branch)."""
        on = [bool(self.failed.get(i)) and self.rng.random() >= self.branch_off for i in idx]
        if not any(on):
            return model(x_t, t, text)[0], torch.tensor(0.0)
        facts, mask = self.branch.encode([self.failed[i] if o else [] for i, o in zip(idx, on)])
        gate = torch.tensor(on, dtype=x_t.dtype, device=x_t.device)[:, None, None]

        def add_branch(module, args, output):
            if isinstance(output, tuple):  # CogVideoX's blocks return (video tokens, text tokens)
                return (add_branch(module, args, output[0]), *output[1:])
            return output + gate * self.branch(output, facts, mask)

        handles = [model.backbone_blocks[i].register_forward_hook(add_branch) for i in self.inject_blocks]
        try:
            return model(x_t, t, text)[0], torch.tensor(sum(on) / len(on))
        finally:
            for h in handles:
                h.remove()

    def _judge_terms(self, videos, prompts: list[str], idx: list[int]) -> dict[str, torch.Tensor]:
        k = videos.shape[0]
        chosen = [self._pick_facts(i) for i in idx]
        width = max(1, max(len(f) for f in chosen))
        questions, owner, mask = [], [], torch.zeros(k, width, dtype=torch.bool)
        for j, facts in enumerate(chosen):
            for n, fact in enumerate(facts):
                questions.append(fact_question(fact))
                owner.append(j)
                mask[j, n] = True
        probs = torch.ones(k, width, dtype=videos.dtype, device=videos.device)
        if questions:
            yes = self.judge.yes_prob(videos[owner], questions)  # (Q,)
            probs = probs.masked_scatter(mask.to(videos.device), yes)
            self._remember_failures(idx, chosen, yes.detach())
        com = self.judge.expected_rating(videos, [PLAUSIBILITY_QUESTION] * k)
        sem = self.judge.expected_rating(videos, [prompt_question(p) for p in prompts])
        fact_p = probs[mask].detach().mean() if questions else torch.tensor(float("nan"))
        return {"phen": phenomena_loss(probs, mask.to(videos.device)), "com": rating_loss(com, self.tau),
                "sem": rating_loss(sem, self.tau), "fact_p": fact_p, "com_rating": com.detach().mean(),
                "sem_rating": sem.detach().mean(),
                "failed_frac": (probs[mask] < 0.5).float().mean().detach() if questions else torch.tensor(0.0)}

    def _pick_facts(self, row: int) -> list[str]:
        facts = self.facts[row]
        return facts if len(facts) <= self.max_facts else self.rng.sample(facts, self.max_facts)

    def _remember_failures(self, idx: list[int], chosen: list[list[str]], yes: torch.Tensor) -> None:
        flat = iter(yes.tolist())
        for i, facts in zip(idx, chosen):
            self.failed[i] = [f for f, p in zip(facts, (next(flat) for _ in facts)) if p < 0.5]
