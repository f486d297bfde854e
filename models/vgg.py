"""VGG-11/13/16/19 with BatchNorm (Simonyan & Zisserman 2015), CIFAR variant: the convolutional stack of
the paper's configurations A/B/D/E (3x3 conv + BN + ReLU, 2x2 max-pools between stages) and one Linear
512 -> classes as the classifier, as in mia_prune's cifar10_models and kuangliu/pytorch-cifar
(VGG-16: 14.7M parameters at 10 classes). No conv bias (BatchNorm follows every conv).

Any input size: the pools use ceil_mode, so a stage at 1x1 stays 1x1 (8x8 digits reach 1x1 after three
pools; 32x32 CIFAR after five, as in the paper's CIFAR variants), and global average pooling feeds the
classifier. --layers is the paper's depth (11, 13, 16 or 19 weight layers; the CIFAR classifier has one
Linear where the paper has three, so VGG-d here has d - 2); --width-factor is not used.
"""
from __future__ import annotations

import torch.nn as nn

from models.resnet import global_pool, init_weights

# channels per conv, "M" = 2x2 max-pool (the paper's table 1, configurations A, B, D, E)
CONFIGS = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    13: [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}
VALID_LAYERS = tuple(CONFIGS)


class VGG(nn.Module):
    def __init__(self, config: list, num_classes: int, in_channels: int):
        super().__init__()
        layers, cin = [], in_channels
        for c in config:
            if c == "M":
                # ceil_mode: a 1x1 map pools to 1x1 instead of to nothing (8x8 inputs)
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
            else:
                layers += [nn.Conv2d(cin, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
                cin = c
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, num_classes)
        init_weights(self)

    def forward(self, x):
        return self.fc(global_pool(self.features(x)))


def build(layers: int, width_factor: int, num_classes: int, in_channels: int) -> VGG:
    """width_factor is not used (accepted so every builder has one signature)."""
    return VGG(CONFIGS[layers], num_classes, in_channels)


def valid(layers: int) -> bool:
    return layers in CONFIGS
