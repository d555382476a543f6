"""Writes small TorchScript classifiers for the command-line tests.

usage: make_torchscript.py OUT.pt NUM_CLASSES [SEED]

The model is defined here, in Python, independently of the C++ model zoo:
a conv + BatchNorm + linear classifier for 1x28x28 inputs.
"""
import sys

import torch
from torch import nn


class SmallNet(nn.Module):
    def __init__(self, num_classes: int):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8 * 14 * 14, num_classes)

    def forward(self, x):
        x = torch.max_pool2d(torch.relu(self.bn(self.conv(x))), 2)
        return self.fc(x.flatten(1))


def main() -> None:
    out, classes = sys.argv[1], int(sys.argv[2])
    torch.manual_seed(int(sys.argv[3]) if len(sys.argv) > 3 else 0)
    torch.jit.script(SmallNet(classes)).save(out)


if __name__ == "__main__":
    main()
