"""ViT-Tiny/16 (dim 192, depth 12, 3 heads) with attention written out, not fused.

The explicit `q @ k^T * scale -> softmax -> @ v` exports as MatMul -> Mul -> Softmax -> MatMul,
the pattern graph/ fuses into one attention kernel.
"""

import torch
from torch import Tensor, nn

from hwlat.zoo.inputs import image_shape, images

PATCH = 16


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attn = (q @ k.transpose(-2, -1) * self.scale).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    """Pre-norm transformer block."""

    def __init__(self, dim: int, heads: int, mlp_dim: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(), nn.Linear(mlp_dim, dim))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    def __init__(
        self,
        image_size: tuple[int, int] = (224, 224),
        in_channels: int = 3,
        dim: int = 192,
        depth: int = 12,
        heads: int = 3,
        mlp_dim: int = 768,
        num_classes: int = 1000,
    ):
        super().__init__()
        num_patches = (image_size[0] // PATCH) * (image_size[1] // PATCH)
        self.patch_embed = nn.Conv2d(in_channels, dim, PATCH, PATCH)
        self.cls_token = nn.Parameter(nn.init.trunc_normal_(torch.empty(1, 1, dim), std=0.02))
        self.pos_embed = nn.Parameter(
            nn.init.trunc_normal_(torch.empty(1, num_patches + 1, dim), std=0.02)
        )
        self.blocks = nn.Sequential(*(Block(dim, heads, mlp_dim) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), tokens], dim=1)
        tokens = self.norm(self.blocks(tokens + self.pos_embed))
        return self.head(tokens[:, 0])


def build(batch_size: int, input_shape: tuple[int, ...] | None):
    shape = image_shape(input_shape, (3, 224, 224), multiple=PATCH)
    return VisionTransformer(shape[1:], shape[0]), images(batch_size, shape)
