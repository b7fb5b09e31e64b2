"""twinsite: dual-site messaging deployments, declared once, drilled often."""
