"""chaostoolkit controls of the twinsite extension (`traffic`: the workload around an experiment)."""
