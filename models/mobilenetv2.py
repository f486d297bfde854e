"""MobileNetV2 (Sandler et al. 2018), CIFAR variant: the paper's inverted-residual stages (expansion t,
channels c, blocks n, stride s: its table 2) with the stem and the second stage at stride 1 instead of 2,
as in kuangliu/pytorch-cifar and mia_prune's cifar10_models, so 32x32 inputs end at 4x4 (8x8 ones at 1x1).
Blocks as torchvision's: 1x1 expansion (absent when t = 1), 3x3 depthwise, 1x1 linear projection, each with
BatchNorm; the residual where stride is 1 and the channels agree; a 1x1 conv to 1280, global average
pooling and one Linear. 2.24M parameters at 10 classes (torchvision's 3.50M at 1000 classes less the
classifier difference).

--layers: only 53, the network's weight layers (stem, 2 + 16 x 3 block convs, the 1x1 conv to 1280, the
classifier): MobileNetV2 has one depth. --width-factor: the paper's width multiplier, an integer here
(1 = the published network; k multiplies every block's channels by k and the 1280 head too); fractional
multipliers (0.5, 0.75) are not offered, as --width-factor is an integer flag. Depthwise convolutions
are Conv2d with groups = channels: pruned (and packed) like every other convolution.
"""
from __future__ import annotations

import torch.nn as nn

from models.resnet import global_pool, init_weights

# (expansion t, channels c, blocks n, stride s); strides of the CIFAR variant (paper: 1, 2, 2, 2, 1, 2, 1)
STAGES = [(1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
DEPTH = 53
VALID_LAYERS = (DEPTH,)


def conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, relu: bool = True) -> list:
    layers = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return layers + [nn.ReLU6(inplace=True)] if relu else layers


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, t: int):
        super().__init__()
        hidden = cin * t
        layers = conv_bn(cin, hidden, 1) if t != 1 else []
        layers += conv_bn(hidden, hidden, 3, stride, groups=hidden)  # depthwise
        layers += conv_bn(hidden, cout, 1, relu=False)  # linear bottleneck
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.conv(x) if self.residual else self.conv(x)


class MobileNetV2(nn.Module):
    def __init__(self, width: int, num_classes: int, in_channels: int):
        super().__init__()
        c = 32 * width
        layers = conv_bn(in_channels, c, 3)
        for t, cout, n, s in STAGES:
            for i in range(n):
                layers.append(InvertedResidual(c, cout * width, s if i == 0 else 1, t))
                c = cout * width
        layers += conv_bn(c, 1280 * width, 1)
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(1280 * width, num_classes)
        init_weights(self)

    def forward(self, x):
        return self.fc(global_pool(self.features(x)))


def build(layers: int, width_factor: int, num_classes: int, in_channels: int) -> MobileNetV2:
    return MobileNetV2(width_factor, num_classes, in_channels)


def valid(layers: int) -> bool:
    return layers == DEPTH
