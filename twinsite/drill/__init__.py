"""`twinsite drill`: chaostoolkit experiments against the lab, a summary and an HTML report."""
