"""paheko-recyclic: carries closed Paheko caisse sessions to Recyclic, exactly once."""

__version__ = "0.1.0"
