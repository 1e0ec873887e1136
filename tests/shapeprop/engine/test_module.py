"""The LR schedule: warmup and milestones."""

from __future__ import annotations

import pytest

from shapeprop.config import ScheduleConfig
from shapeprop.engine.module import lr_factor

pytestmark = pytest.mark.usefixtures("one_thread")


def test_lr_factor_warmup_and_milestones():
    s = ScheduleConfig(lr=0.1, warmup_steps=10, warmup_factor=0.001, milestones=[20, 30], gamma=0.1)
    assert lr_factor(0, s) == pytest.approx(0.001)
    assert lr_factor(5, s) == pytest.approx(0.001 * 0.5 + 0.5)
    assert lr_factor(10, s) == 1.0
    assert lr_factor(19, s) == 1.0
    assert lr_factor(20, s) == pytest.approx(0.1)
    assert lr_factor(30, s) == pytest.approx(0.01)
