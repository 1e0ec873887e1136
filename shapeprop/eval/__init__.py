"""Evaluation: COCO-style AP with category subsets, the best-overlap analysis, inference timing."""
