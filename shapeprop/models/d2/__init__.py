"""ShapeProp as a detectron2 plugin (optional: needs detectron2, which is built from source).

Importing this package registers, in detectron2's registries:

- `ROI_HEADS_REGISTRY["ShapePropROIHeads"]`: StandardROIHeads whose mask branch runs the ShapeProp
  head (`shapeprop.head.ShapePropHead`) on the box head's RoIs and fuses its shape prior into the
  mask head; mask loss only on instances with `gt_has_mask`.
- `META_ARCH_REGISTRY["RetinaMask"]`: RetinaNet plus the same mask branch on its detections.
- `BACKBONE_REGISTRY["build_torchvision_fpn_backbone"]`: the torchvision FPN backbones of
  `shapeprop.models.backbones` (any registered backbone), as used by the torchvision path.

Use in your own detectron2 project::

    from detectron2.config import get_cfg
    from detectron2.data import build_detection_train_loader
    from detectron2.modeling import build_model
    from shapeprop.models.d2 import ShapePropDatasetMapper, add_shapeprop_config

    cfg = get_cfg()
    add_shapeprop_config(cfg)                        # MODEL.SHAPEPROP / RETINAMASK / TORCHVISION_FPN
    cfg.merge_from_file("mask_rcnn_R_50_FPN_1x.yaml")
    cfg.MODEL.ROI_HEADS.NAME = "ShapePropROIHeads"   # or MODEL.META_ARCHITECTURE = "RetinaMask"
    cfg.MODEL.SHAPEPROP.LATENT_CHANNELS = 16         # any ShapePropConfig field, upper-cased
    model = build_model(cfg)
    loader = build_detection_train_loader(cfg, mapper=ShapePropDatasetMapper(cfg, is_train=True))

Dataset dicts may carry `has_mask` per annotation (the records of `shapeprop.data` do);
`ShapePropDatasetMapper` turns it into `Instances.gt_has_mask`. Training adds the losses `loss_mil` and
`loss_shape`; inference adds `saliency` and `shape_activation` RoI maps [N, 1, S, S] to the output
`Instances` next to `pred_masks`.

From the harness, `model.framework: detectron2` builds the same experiment with detectron2 through
`build_detectron2_detector` (same arguments as `shapeprop.models.build.build_detector`), whose
`Detectron2Detector` the engine trains and the evaluation runs like a torchvision detector.
"""

from __future__ import annotations

try:
    import detectron2  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "shapeprop.models.d2 needs detectron2, which is not on the package index: build it from "
        "https://github.com/facebookresearch/detectron2 (pip install --no-build-isolation <checkout>), "
        "or use model.framework 'torchvision'"
    ) from exc

from shapeprop.models.d2.adapter import Detectron2Detector, build_detectron2_detector, param_counts
from shapeprop.models.d2.backbone import TorchvisionFPN, build_torchvision_fpn_backbone
from shapeprop.models.d2.config import (
    add_shapeprop_config,
    config_from_model_config,
    get_cfg,
    model_zoo_config_file,
    shapeprop_config_from_cfg,
)
from shapeprop.models.d2.mapper import ShapePropDatasetMapper
from shapeprop.models.d2.retinamask import RetinaMask
from shapeprop.models.d2.roi_heads import ShapePropROIHeads

__all__ = [
    "Detectron2Detector",
    "RetinaMask",
    "ShapePropDatasetMapper",
    "ShapePropROIHeads",
    "TorchvisionFPN",
    "add_shapeprop_config",
    "build_detectron2_detector",
    "build_torchvision_fpn_backbone",
    "config_from_model_config",
    "get_cfg",
    "model_zoo_config_file",
    "param_counts",
    "shapeprop_config_from_cfg",
]
