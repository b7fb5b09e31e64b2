"""The workload: a traffic driver that records a history (see `twinsite.history`) for the checker.

    from twinsite.workload import DriverConfig, TrafficDriver, BackgroundTraffic
"""

from .background import BackgroundTraffic
from .driver import DriverConfig, DriverStats, TrafficDriver
from .lab import endpoints_from_lab, token_from_lab

__all__ = ["BackgroundTraffic", "DriverConfig", "DriverStats", "TrafficDriver",
           "endpoints_from_lab", "token_from_lab"]
