"""Stubs for the native extension ``cowcore._cowcore`` (rust/cowcore-py).

Until the Rust core is proven equal to the reference it exposes only its version.
"""

__version__: str
"""The version of the Rust crates, which is also the package version."""

def backends() -> list[str]:
    """Names of the simulation backends this extension provides (none yet).

    Returns:
        The backend names, for :data:`cowcore.BACKENDS` to include.
    """
