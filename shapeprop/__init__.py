"""ShapeProp: learned saliency propagation for semi-supervised instance segmentation."""

__version__ = "0.1.0"
