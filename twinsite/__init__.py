"""twinsite: dual-site messaging deployments, declared once, drilled often."""


def discover(discover_system: bool = True) -> dict:
    """chaostoolkit discovery (`chaos discover twinsite --no-install`): see twinsite.chaos."""
    from .chaos import discover as _discover  # lazy: `import twinsite` stays free of chaoslib
    return _discover(discover_system)
