"""CIFAR ResNets (He et al. 2016) with basic blocks.

Depths 20/32/44/56/110: 3 stages of 16/32/64 channels, n = (depth - 2) / 6 blocks each. Depth 18:
the 4-stage CIFAR ResNet-18 (64..512 channels, [2, 2, 2, 2] blocks, 3x3 stem, no max-pool).
Shortcuts that change shape are 1x1 conv + BN (option B): they are real Conv2d weights, so the
pruning code prunes them like every other conv.
"""
from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F

CIFAR_DEPTHS = (20, 32, 44, 56, 110)  # 6n + 2 with basic blocks
VALID_LAYERS = (18, *CIFAR_DEPTHS)


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, widths: list[int], blocks: list[int], num_classes: int, in_channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        layers, cin = [], widths[0]
        for i, (w, n) in enumerate(zip(widths, blocks)):
            for j in range(n):
                layers.append(BasicBlock(cin, w, stride=2 if i > 0 and j == 0 else 1))
                cin = w
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, num_classes)
        init_weights(self)

    def forward(self, x):
        out = self.layers(F.relu(self.bn1(self.conv1(x))))
        return self.fc(global_pool(out))


def global_pool(x):
    """Global average pooling [N, C, H, W] -> [N, C], any input size (8x8 digits, 32x32 CIFAR).
    A mean, not nn.AdaptiveAvgPool2d: the same values, and its backward is deterministic on CUDA
    (AdaptiveAvgPool2d's is not). No module, so state_dict keys are unchanged."""
    return x.mean((2, 3))


def init_weights(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def build(layers: int, width_factor: int, num_classes: int, in_channels: int) -> ResNet:
    """width_factor is not used by ResNets (accepted so every builder has one signature)."""
    if layers == 18:
        return ResNet([64, 128, 256, 512], [2, 2, 2, 2], num_classes, in_channels)
    n = (layers - 2) // 6
    return ResNet([16, 32, 64], [n, n, n], num_classes, in_channels)


def valid(layers: int) -> bool:
    return layers in VALID_LAYERS
