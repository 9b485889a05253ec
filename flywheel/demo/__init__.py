"""`flywheel demo`: the whole flywheel on one machine, offline."""
