"""Random weights at a realistic activation scale: the zoo ships no pretrained weights.

Plain random weights let activations shrink or grow with depth (a freshly initialised MobileNetV2
gives logits around 1e-9, and the spiking net never fires). Setting every BatchNorm's statistics
from the example batch keeps each layer's output near unit scale, like a trained net, so that
export checks compare meaningful numbers and spike rates are plausible.
"""

import torch
from torch import Tensor, nn

_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


@torch.no_grad()
def init_weights(model: nn.Module) -> nn.Module:
    """torchvision's initialisation for convs, norms and linears."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, _BATCHNORMS):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)
    return model


@torch.no_grad()
def calibrate_batchnorm(model: nn.Module, inputs: tuple[Tensor, ...]) -> nn.Module:
    """Set each BatchNorm's running statistics to those of its own input on `inputs`.

    One eval-mode pass: a hook sets a norm's statistics just before it runs, so later layers see
    already-normalised activations. Unlike a train-mode pass this never fails on a single value
    per channel (batch 1 at 1x1 spatial size).
    """

    def set_statistics(norm: nn.Module, args: tuple[Tensor, ...]) -> None:
        x = args[0]
        dims = [d for d in range(x.dim()) if d != 1]
        norm.running_mean.copy_(x.mean(dims))
        norm.running_var.copy_(x.var(dims, unbiased=False))

    norms = [m for m in model.modules() if isinstance(m, _BATCHNORMS)]
    if not norms:
        return model
    hooks = [norm.register_forward_pre_hook(set_statistics) for norm in norms]
    try:
        model.eval()(*inputs)
    finally:
        for hook in hooks:
            hook.remove()
    return model
