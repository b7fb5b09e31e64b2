"""`python -m twinsite.lab --stack lab --state-dir DIR`: the lab supervisor (see supervisor.py).

An entry of its own because multiprocessing re-runs a `-m` main module in every child it starts
(the forked gateways) unless that module is a package's `__main__`.
"""

import sys

from .supervisor import main

sys.exit(main())
