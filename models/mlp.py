"""Fully connected network for feature vectors (tabular data): mia_prune's `ColumnFC` for Purchase-100 and
Texas-100, Linear(F -> 256) + ReLU + dropout 0.1 -> Linear(256 -> 128) + ReLU + dropout 0.1 ->
Linear(128 -> classes).

--layers: the number of hidden layers (1..6, default 2 = ColumnFC), widths 256, 128, 64, ... (halving);
--width-factor k multiplies every hidden width (ColumnFC: 1). The hidden Linear layers are prunable, the
classifier stays dense (pruning/masks.py).

Input: feature vectors are [N, F, 1, 1] (data/datasets.py: F features as the channels of a 1x1 image, so
the image pipeline carries them unchanged); the forward averages over the spatial axes, which is the
identity there. On images it sees only each channel's mean: it builds and runs on 8x8 and 32x32 inputs
(every arch does), but is no model for images.
"""
from __future__ import annotations

import torch.nn as nn

from models.resnet import global_pool

HIDDEN = 256     # the first hidden width of ColumnFC; each further layer halves it
DROPOUT = 0.1    # ColumnFC's
VALID_LAYERS = tuple(range(1, 7))


class MLP(nn.Module):
    def __init__(self, widths: list[int], num_classes: int, in_features: int, dropout: float = DROPOUT):
        super().__init__()
        layers, cin = [], in_features
        for w in widths:
            layers += [nn.Linear(cin, w), nn.ReLU(inplace=True), nn.Dropout(dropout)]
            cin = w
        self.hidden = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, num_classes)  # registered last: the classifier (pruning/masks.py keeps it dense)
        # Hidden layers initialised like every conv here (Kaiming normal, fan_out). With PyTorch's default
        # (uniform, bound 1/sqrt(fan_in): 0.1 for 100 inputs, 0.0625 for 256) every weight of the second layer
        # is smaller than most of the first's, and static global magnitude pruning at 0.9 removed that layer
        # whole (layer collapse: the embedded tabular set's MLP at chance, 6% train accuracy).
        for m in self.hidden:
            if isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, x):
        return self.fc(self.hidden(global_pool(x)))


def build(layers: int, width_factor: int, num_classes: int, in_channels: int) -> MLP:
    return MLP([width_factor * HIDDEN >> i for i in range(layers)], num_classes, in_channels)


def valid(layers: int) -> bool:
    return layers in VALID_LAYERS
