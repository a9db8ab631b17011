"""oomlens: see, explain, investigate and prevent Linux OOM kills with the kernel's own rules."""

__version__ = "0.1.0"
