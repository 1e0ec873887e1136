"""The Lightning training engine: step-indexed sampling, checkpoint/resume, progress callbacks."""
