"""Detectors on torchvision (Mask R-CNN, RetinaMask), optionally with ShapeProp, and the baselines."""
