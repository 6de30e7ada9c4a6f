"""gradviz: a visualiser and debugger for autograd."""
__version__ = "0.1.0"
