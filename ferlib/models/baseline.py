"""A small baseline (torchvision ResNet-18) so the quickstart does not wait for the paper models."""
import torch
from torch import nn
from torchvision.models import resnet18

from .registry import ModelOutput, register_model


class Baseline(nn.Module):
    """ResNet-18 trunk + linear head. Input [B,3,H,W] (any H,W ≥ 32) → logits [B,C], features [B,512]."""

    def __init__(self, num_classes: int = 7, width: int = 64):
        super().__init__()
        net = resnet18(num_classes=num_classes)
        if width != 64:  # narrower variant for fast CPU smoke runs
            net = _narrow_resnet18(num_classes, width)
        self.trunk = nn.Sequential(*list(net.children())[:-1])
        self.fc = net.fc

    def forward(self, x: torch.Tensor) -> ModelOutput:
        feats = torch.flatten(self.trunk(x), 1)
        return ModelOutput(self.fc(feats), feats, {})


def _narrow_resnet18(num_classes: int, width: int) -> nn.Module:
    from torchvision.models.resnet import BasicBlock, ResNet

    net = ResNet(BasicBlock, [2, 2, 2, 2], num_classes=num_classes)
    # Rebuild with a different base width by scaling every conv.
    net.inplanes = width
    net.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
    net.bn1 = nn.BatchNorm2d(width)
    net.layer1 = net._make_layer(BasicBlock, width, 2)
    net.layer2 = net._make_layer(BasicBlock, width * 2, 2, stride=2)
    net.layer3 = net._make_layer(BasicBlock, width * 4, 2, stride=2)
    net.layer4 = net._make_layer(BasicBlock, width * 8, 2, stride=2)
    net.fc = nn.Linear(width * 8, num_classes)
    return net


@register_model
def baseline(num_classes: int = 7, width: int = 64, **kw) -> nn.Module:
    """torchvision ResNet-18 (``width=64``) or a narrower copy for CPU smoke runs."""
    return Baseline(num_classes=num_classes, width=width)
