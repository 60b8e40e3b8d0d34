"""shoprouter: route e-commerce support conversations to specialised agents."""

__version__ = "0.1.0"
