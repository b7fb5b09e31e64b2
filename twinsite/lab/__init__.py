"""The local dual-site lab: the stack's topology as real processes behind a link fabric.

    lab = twinsite.lab.up()            # supervisor in the background, returns when ready
    lab.apply(SitePowerLoss("pangyo")); lab.apply(Restore("pangyo"))   # twinsite.faults
    twinsite.lab.down()
"""

from .client import LabClient, down, is_running, up
from .model import LabError

__all__ = ["LabClient", "LabError", "down", "is_running", "up"]
