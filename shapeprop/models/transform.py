"""torchvision's detection transform for images the data loader has already resized."""

from __future__ import annotations

from typing import Any

import torch
from torchvision.models.detection.transform import GeneralizedRCNNTransform

IMAGE_MEAN = [0.485, 0.456, 0.406]
IMAGE_STD = [0.229, 0.224, 0.225]


class PreResizedTransform(GeneralizedRCNNTransform):
    """Normalises and batches, but does not resize: the loader already resized to the data config's
    min/max size, so images are not resized twice. `postprocess` still maps boxes and masks from the
    network input size to whatever output size it is given (the original image size)."""

    def __init__(self, min_size: int, max_size: int, size_divisible: int = 32):
        super().__init__(min_size, max_size, IMAGE_MEAN, IMAGE_STD, size_divisible=size_divisible)

    def resize(
        self, image: torch.Tensor, target: dict[str, Any] | None = None
    ) -> tuple[torch.Tensor, dict[str, Any] | None]:
        return image, target
