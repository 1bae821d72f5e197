"""SAM built from Meta's ``segment_anything`` modules: specs, builder, checkpoints, forward, preprocessing."""
