"""``paheko-recyclic`` sub-commands, one module per concern."""
