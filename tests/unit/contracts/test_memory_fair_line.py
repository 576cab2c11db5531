"""The memory line for the GPUs against the FairLine contract."""

from __future__ import annotations

import pytest

from dal.memory import MemoryFairLine
from tests.contracts.fair_line_contract import FairLineContract, ManualClock


class TestMemoryFairLine(FairLineContract):
    @pytest.fixture
    def line(self, clock: ManualClock) -> MemoryFairLine:
        return MemoryFairLine(clock=clock)
