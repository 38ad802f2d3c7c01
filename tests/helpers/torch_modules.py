"""Small torch modules the fast-path and API tests share."""

from __future__ import annotations

import torch
from torch import nn


class Rolls(nn.Module):
    """No fast-path mapping (torch.roll): the fast path refuses it, `route="auto"` exports it."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return torch.roll(self.conv(x), 1, dims=2)
