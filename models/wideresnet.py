"""Wide ResNets WRN-d-k (Zagoruyko & Komodakis 2016): pre-activation basic blocks, 3 stages of
16k/32k/64k channels, n = (d - 4) / 6 blocks each. WRN-28-2 (1.47M parameters) is the LiRA
reference architecture."""
from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F

from models.resnet import global_pool, init_weights

VALID_LAYERS = "depth >= 10 with (depth - 4) % 6 == 0, e.g. 16, 22, 28, 40"


class PreActBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, dropout: float):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.dropout = dropout
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x):
        o = F.relu(self.bn1(x))
        # The projection shortcut reads the pre-activated input (as in the reference implementation).
        short = x if self.shortcut is None else self.shortcut(o)
        o = self.conv1(o)
        o = F.relu(self.bn2(o))
        if self.dropout:
            o = F.dropout(o, self.dropout, self.training)
        return self.conv2(o) + short


class WideResNet(nn.Module):
    def __init__(self, depth: int, k: int, num_classes: int, in_channels: int, dropout: float = 0.0):
        super().__init__()
        n = (depth - 4) // 6
        widths = [16, 16 * k, 32 * k, 64 * k]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        blocks, cin = [], widths[0]
        for i, w in enumerate(widths[1:]):
            for j in range(n):
                blocks.append(PreActBlock(cin, w, stride=2 if i > 0 and j == 0 else 1, dropout=dropout))
                cin = w
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(cin)
        self.fc = nn.Linear(cin, num_classes)
        init_weights(self)

    def forward(self, x):
        out = F.relu(self.bn(self.blocks(self.conv1(x))))
        return self.fc(global_pool(out))


def build(layers: int, width_factor: int, num_classes: int, in_channels: int) -> WideResNet:
    return WideResNet(layers, width_factor, num_classes, in_channels)


def valid(layers: int) -> bool:
    # depth 4 would mean zero blocks per stage; 10 is the smallest real WRN
    return layers >= 10 and (layers - 4) % 6 == 0
