"""The workload: a traffic driver that records a history (see `twinsite.history`) for the checker.

    from twinsite.workload import DriverConfig, TrafficDriver, BackgroundTraffic, current
"""

from .background import BackgroundTraffic, current
from .driver import DriverConfig, DriverStats, TrafficDriver
from .lab import endpoints_from_lab

__all__ = ["BackgroundTraffic", "DriverConfig", "DriverStats", "TrafficDriver", "current",
           "endpoints_from_lab"]
