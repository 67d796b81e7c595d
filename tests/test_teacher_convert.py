"""The VideoMAEv2 converter against a plain re-implementation of the release's encoder (timm-style ViT with
fixed sinusoidal positions, written here from the architecture): the converted VideoMAEModel's tokens equal
the release forward's, through the library call and through `physalign convert-teacher`."""

import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from typer.testing import CliRunner

from physalign.cli import app
from physalign.teacher.convert import ConversionError, convert_file, convert_videomae_v2
from physalign.teacher.model import load_teacher

WIDTH, DEPTH, HEADS, TUBELET, PATCH, FRAMES, SIZE = 48, 2, 4, 2, 8, 4, (16, 24)


def release_state(pooled: bool = True, prefix: str = "module.") -> dict[str, torch.Tensor]:
    """Random weights under the release's names; ``pooled``: fc_norm + head (mean pooling), else a final norm."""
    g = torch.Generator().manual_seed(0)

    def r(*shape):
        return torch.randn(*shape, generator=g) * 0.2

    state = {"patch_embed.proj.weight": r(WIDTH, 3, TUBELET, PATCH, PATCH), "patch_embed.proj.bias": r(WIDTH)}
    for i in range(DEPTH):
        b = f"blocks.{i}."
        state |= {b + "norm1.weight": 1 + r(WIDTH), b + "norm1.bias": r(WIDTH), b + "attn.qkv.weight": r(3 * WIDTH, WIDTH),
                  b + "attn.q_bias": r(WIDTH), b + "attn.v_bias": r(WIDTH), b + "attn.proj.weight": r(WIDTH, WIDTH),
                  b + "attn.proj.bias": r(WIDTH), b + "norm2.weight": 1 + r(WIDTH), b + "norm2.bias": r(WIDTH),
                  b + "mlp.fc1.weight": r(4 * WIDTH, WIDTH), b + "mlp.fc1.bias": r(4 * WIDTH),
                  b + "mlp.fc2.weight": r(WIDTH, 4 * WIDTH), b + "mlp.fc2.bias": r(WIDTH)}
    if pooled:
        state |= {"fc_norm.weight": 1 + r(WIDTH), "fc_norm.bias": r(WIDTH), "head.weight": r(10, WIDTH), "head.bias": r(10)}
    else:
        state |= {"norm.weight": 1 + r(WIDTH), "norm.bias": r(WIDTH)}
    return {prefix + k: v for k, v in state.items()}


def sinusoid(n: int, d: int) -> torch.Tensor:
    """The fixed position table: position / 10000^(2 floor(j / 2) / d), sine on even j, cosine on odd."""
    angle = torch.arange(n, dtype=torch.float64)[:, None] / torch.pow(10000.0, 2 * (torch.arange(d) // 2) / d)
    return torch.where(torch.arange(d) % 2 == 0, torch.sin(angle), torch.cos(angle)).float()


def release_forward(state: dict, video: torch.Tensor) -> torch.Tensor:
    """(B, C, T, H, W) -> (B, N, D) tokens, as the release's encoder computes them."""
    s = {k.split(".", 1)[1]: v for k, v in state.items()}
    x = F.conv3d(video, s["patch_embed.proj.weight"], s["patch_embed.proj.bias"], stride=(TUBELET, PATCH, PATCH))
    x = x.flatten(2).transpose(1, 2)
    b, n, d = x.shape
    x = x + sinusoid(n, d)
    for i in range(DEPTH):
        p = lambda name: s[f"blocks.{i}.{name}"]  # noqa: E731
        h = F.layer_norm(x, (d,), p("norm1.weight"), p("norm1.bias"), 1e-6)
        bias = torch.cat([p("attn.q_bias"), torch.zeros(d), p("attn.v_bias")])
        q, k, v = F.linear(h, p("attn.qkv.weight"), bias).reshape(b, n, 3, HEADS, d // HEADS).permute(2, 0, 3, 1, 4)
        attn = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d // HEADS), dim=-1) @ v
        x = x + F.linear(attn.transpose(1, 2).reshape(b, n, d), p("attn.proj.weight"), p("attn.proj.bias"))
        h = F.layer_norm(x, (d,), p("norm2.weight"), p("norm2.bias"), 1e-6)
        x = x + F.linear(F.gelu(F.linear(h, p("mlp.fc1.weight"), p("mlp.fc1.bias"))), p("mlp.fc2.weight"), p("mlp.fc2.bias"))
    if "norm.weight" in s:
        x = F.layer_norm(x, (d,), s["norm.weight"], s["norm.bias"], 1e-6)
    return x


def video() -> torch.Tensor:
    return torch.randn(2, 3, FRAMES, *SIZE, generator=torch.Generator().manual_seed(1))


def tokens(model, clip: torch.Tensor) -> torch.Tensor:
    return model(pixel_values=clip.permute(0, 2, 1, 3, 4)).last_hidden_state  # VideoMAEModel reads (B, T, C, H, W)


@pytest.mark.parametrize("pooled", [True, False])
def test_converted_encoder_computes_the_release_tokens(pooled):
    state = release_state(pooled)
    model = convert_videomae_v2(state, heads=HEADS, frames=FRAMES, image_size=SIZE)  # 48 wide: none of the release widths
    assert model.config.num_attention_heads == HEADS and model.config.use_mean_pooling == pooled
    with torch.no_grad():
        torch.testing.assert_close(tokens(model, video()), release_forward(state, video()), atol=1e-5, rtol=1e-4)


def test_convert_teacher_command_writes_a_teacher_folder(tmp_path):
    state = release_state(prefix="model.")
    save_file(state, str(tmp_path / "release.safetensors"))
    result = CliRunner().invoke(app, ["convert-teacher", str(tmp_path / "release.safetensors"), "--out",
                                      str(tmp_path / "teacher"), "--heads", str(HEADS), "--frames", str(FRAMES),
                                      "--image-size", f"{SIZE[0]},{SIZE[1]}"])
    assert result.exit_code == 0, result.output
    with torch.no_grad():
        torch.testing.assert_close(tokens(load_teacher(tmp_path / "teacher"), video()), release_forward(state, video()),
                                   atol=1e-5, rtol=1e-4)


def test_what_the_converter_cannot_read_is_refused(tmp_path):
    state = release_state()
    with pytest.raises(ConversionError, match="give the number of attention heads"):
        convert_videomae_v2(state)  # width 48 is none of the release's
    with pytest.raises(ConversionError, match="layer scale"):
        convert_videomae_v2({**state, "module.blocks.0.gamma_1": torch.ones(WIDTH)}, heads=HEADS)
    with pytest.raises(ConversionError, match="does not know: \\['blocks.0.attn.rel_pos'\\]"):
        convert_videomae_v2({**state, "module.blocks.0.attn.rel_pos": torch.ones(3)}, heads=HEADS, frames=FRAMES,
                            image_size=SIZE)
    with pytest.raises(ConversionError, match="not a VideoMAEv2 encoder"):
        convert_videomae_v2({"weight": torch.ones(3)})
    (tmp_path / "release.pth").write_bytes(b"not read")
    with pytest.raises(ConversionError, match="does not unpickle"):
        convert_file(tmp_path / "release.pth", tmp_path / "out")
