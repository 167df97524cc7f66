"""maskcls: is a mask worn correctly, incorrectly or not at all, plus gender and age band."""
__version__ = "0.1.0"
