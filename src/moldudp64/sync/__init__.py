"""sync I/O layer over the protocol cores."""
