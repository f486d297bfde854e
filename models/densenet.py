"""DenseNet-BC (Huang et al. 2017), CIFAR variant: a 3x3 stem of 2 x growth channels (no 7x7 conv, no
max-pool), four dense blocks of bottleneck layers (BN-ReLU-1x1 conv to 4 x growth, BN-ReLU-3x3 conv to
growth, concatenated to the block's input), transitions that halve the channels (compression 0.5) and
average-pool 2x2, then BN-ReLU, global average pooling and one Linear, as in kuangliu/pytorch-cifar and
mia_prune's cifar10_models (DenseNet-121, growth 32: 6.96M parameters at 10 classes).

--layers is the ImageNet name's depth (121, 169, 201: blocks of 6-12-24-16, 6-12-32-32, 6-12-48-32 layers,
growth 32); --width-factor is not used. Inputs of 8x8 (three transitions: 1x1 in the last block) and up.
Every convolution is prunable like any other; a dense block's concatenation makes a layer's input channels
the outputs of every earlier layer of the block (what a filter pruner must respect).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.resnet import global_pool, init_weights

BLOCKS = {121: (6, 12, 24, 16), 169: (6, 12, 32, 32), 201: (6, 12, 48, 32)}
VALID_LAYERS = tuple(BLOCKS)
GROWTH = 32


class Bottleneck(nn.Module):
    def __init__(self, cin: int, growth: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, 4 * growth, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(4 * growth)
        self.conv2 = nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False)

    def forward(self, x):
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        return torch.cat([out, x], 1)


class Transition(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(cin)
        self.conv = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x):
        return F.avg_pool2d(self.conv(F.relu(self.bn(x))), 2)


class DenseNet(nn.Module):
    def __init__(self, blocks: tuple, growth: int, num_classes: int, in_channels: int, reduction: float = 0.5):
        super().__init__()
        c = 2 * growth
        self.conv1 = nn.Conv2d(in_channels, c, 3, padding=1, bias=False)
        stages = []
        for i, n in enumerate(blocks):
            for _ in range(n):
                stages.append(Bottleneck(c, growth))
                c += growth
            if i < len(blocks) - 1:
                stages.append(Transition(c, int(c * reduction)))
                c = int(c * reduction)
        self.features = nn.Sequential(*stages)
        self.bn = nn.BatchNorm2d(c)
        self.fc = nn.Linear(c, num_classes)
        init_weights(self)

    def forward(self, x):
        out = F.relu(self.bn(self.features(self.conv1(x))))
        return self.fc(global_pool(out))


def build(layers: int, width_factor: int, num_classes: int, in_channels: int) -> DenseNet:
    """width_factor is not used (accepted so every builder has one signature)."""
    return DenseNet(BLOCKS[layers], GROWTH, num_classes, in_channels)


def valid(layers: int) -> bool:
    return layers in BLOCKS
