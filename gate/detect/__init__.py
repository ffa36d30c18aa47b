"""Face detection, landmark refinement, quality checks and alignment."""
