"""Baselines that make pseudo masks for box-only instances: GrabCut and progressive (self-training)."""
