"""The data layer: loading input files and feedback, point-in-time features, the logged offers learning reads, retention."""
